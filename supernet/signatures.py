"""Block signatures: the one enumeration of a network's pieces, with their analytic costs.

A network is the sequence stem, blocks and embeddings, head. Each piece is identified by a
:class:`BlockSignature` (kind plus the shapes that determine its cost). The MAC/parameter counter,
the latency lookup table and the model builder all enumerate networks through
:func:`arch_signatures`, so a block is described, counted, measured and built the same way
everywhere.

MACs count convolutions, linear layers and the two attention matmuls (q.k and attn.v), and skip
BatchNorm, activations, softmax, resizing and additions - the release's profiler convention.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Iterator, Mapping

from supernet.arch import BLOCK_OPTIONS, ArchConfig, stage_resolution

# Attention constants of EfficientFormerV2 (the release's: 8 heads per attention block, key dim 32 and value
# ratio 4 per head; the heads option of a block, when a space searches it, defaults to ATTN_HEADS).
ATTN_HEADS, ATTN_KEY_DIM, ATTN_RATIO = 8, 32, 4
DOWN_KEY_DIM, DOWN_HEADS, DOWN_RATIO = 16, 8, 4

KINDS = ("stem", "ffn", "attn", "embed", "attn_down", "head")


def _ceil_half(r: int) -> int:
    return -(-r // 2)


def _conv(cin: int, cout: int, k: int = 1, groups: int = 1, bn: bool = True) -> int:
    """Parameters of a conv with bias, plus the BN affine pair if ``bn``."""
    return cout * (cin // groups) * k * k + cout + (2 * cout if bn else 0)


@dataclasses.dataclass(frozen=True, order=True)
class BlockSignature:
    """What determines one piece's cost: kind, channel widths, input resolution and options.

    kinds and their fields:
      stem      in_width=3, out_width=C0, resolution=image size
      ffn       in_width=out_width=C, expansion, resolution
      attn      in_width=out_width=C, expansion (of its FFN), resolution, stride (2 in stage 3, else 1)
      embed     in_width, out_width, resolution (input; output is ceil(r/2)); conv3x3 s2 + BN
      attn_down in_width, out_width, resolution (input); the attention-downsampling branch (stage 3->4)
      head      in_width=C, out_width=classes, resolution, heads (1, or 2 with distillation)

    ``options`` are the block's values of the registered block options (``supernet.arch.BLOCK_OPTIONS``) that
    its kind has and that differ from the default, as sorted pairs (a mapping is accepted): a default value adds
    nothing to the key, so LUT rows written before an option existed keep their keys. The LUT stores each option
    as a column of its own (:func:`option_columns`).
    """

    kind: str
    in_width: int
    out_width: int
    resolution: int
    expansion: int = 0
    stride: int = 1
    heads: int = 0
    options: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:  # hashed once: signatures are dict keys on the LUT's hot path
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        kept = tuple(sorted((k, int(v)) for k, v in pairs
                            if self.kind in BLOCK_OPTIONS[k].kinds and int(v) != BLOCK_OPTIONS[k].default))
        object.__setattr__(self, "options", kept)
        fields = (self.kind, self.in_width, self.out_width, self.resolution, self.expansion, self.stride, self.heads,
                  self.options)
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:
        return self._hash

    def option(self, name: str) -> int:
        """Its value of the block option ``name`` (the default where it has none)."""
        return dict(self.options).get(name, BLOCK_OPTIONS[name].default)

    @property
    def key(self) -> str:
        """Stable text key, e.g. ``ffn-c96-e4-r14`` (used as the LUT index; options append ``-<tag><value>``)."""
        k = self.kind
        opts = "".join(f"-{BLOCK_OPTIONS[n].tag}{v}" for n, v in self.options)
        if k == "stem":
            return f"stem-c{self.out_width}-r{self.resolution}"
        if k == "ffn":
            return f"ffn-c{self.in_width}-e{self.expansion}-r{self.resolution}{opts}"
        if k == "attn":
            return f"attn-c{self.in_width}-e{self.expansion}-r{self.resolution}-s{self.stride}{opts}"
        if k in ("embed", "attn_down"):
            return f"{k}-c{self.in_width}-{self.out_width}-r{self.resolution}"
        return f"head-c{self.in_width}-k{self.out_width}-h{self.heads}-r{self.resolution}"

    def row(self) -> dict[str, Any]:
        """Its fields as a LUT row: the plain fields, then one column per block option (:func:`option_columns`)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        for column, (name, kind) in option_columns().items():
            out[column] = self.option(name) if self.kind == kind else 0
        return out

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "BlockSignature":
        """The signature a LUT row holds (an option column a row lacks reads as the default)."""
        plain = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name != "options"}
        options = {name: row[column] for column, (name, kind) in option_columns().items()
                   if kind == row["kind"] and row.get(column, 0)}
        return cls(**plain, options=options)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of this piece's input tensor."""
        return (self.in_width, self.resolution, self.resolution)

    @property
    def params(self) -> int:
        return signature_params(self)

    @property
    def macs(self) -> int:
        return signature_macs(self)


# ------------------------------------------------------------------ cost formulas
def _ffn_params(c: int, e: int) -> int:
    h = c * e
    return _conv(c, h) + _conv(h, h, 3, groups=h) + _conv(h, c) + c  # + layer scale


def _ffn_macs(c: int, e: int, r: int) -> int:
    h = c * e
    return r * r * (c * h + 9 * h + h * c)


def _attention_params(c: int, r: int, stride: int, heads: int) -> int:
    kd, dh = ATTN_KEY_DIM * heads, ATTN_KEY_DIM * ATTN_RATIO * heads
    n = _ceil_half(r) ** 2 if stride == 2 else r * r
    p = _conv(c, c, 3, groups=c) if stride == 2 else 0
    p += 2 * _conv(c, kd) + _conv(c, dh) + _conv(dh, dh, 3, groups=dh)
    p += 2 * _conv(heads, heads, bn=False) + _conv(dh, c)
    return p + heads * n + c  # bias table + layer scale


def _attention_macs(c: int, r: int, stride: int, heads: int) -> int:
    kd, dh = ATTN_KEY_DIM * heads, ATTN_KEY_DIM * ATTN_RATIO * heads
    ra = _ceil_half(r) if stride == 2 else r
    n = ra * ra
    m = n * c * 9 if stride == 2 else 0
    m += n * c * (2 * kd + dh) + n * dh * 9
    m += n * n * (kd + dh)  # q.k and attn.v
    m += 2 * n * n * heads * heads  # talking heads
    return m + r * r * dh * c  # projection at full resolution


def _attn_down_params(cin: int, cout: int, r: int) -> int:
    kd, dh = DOWN_KEY_DIM * DOWN_HEADS, DOWN_KEY_DIM * DOWN_RATIO * DOWN_HEADS
    p = _conv(cin, cin, 3, groups=cin, bn=False) + _conv(cin, kd)  # local-global query
    p += _conv(cin, kd) + _conv(cin, dh) + _conv(dh, dh, 3, groups=dh) + _conv(dh, cout)
    return p + DOWN_HEADS * r * r


def _attn_down_macs(cin: int, cout: int, r: int) -> int:
    kd, dh = DOWN_KEY_DIM * DOWN_HEADS, DOWN_KEY_DIM * DOWN_RATIO * DOWN_HEADS
    n, n2 = r * r, _ceil_half(r) ** 2
    m = n2 * cin * 9 + n2 * cin * kd  # query
    m += n * cin * (kd + dh) + n2 * dh * 9
    m += n2 * n * (kd + dh)
    return m + n2 * dh * cout


@functools.lru_cache(maxsize=None)
def signature_params(sig: BlockSignature) -> int:
    """Trainable parameters (incl. attention-bias tables and layer scales) of one piece."""
    k, c = sig.kind, sig.in_width
    if k == "stem":
        half = sig.out_width // 2
        return _conv(3, half, 3) + _conv(half, sig.out_width, 3)
    if k == "ffn":
        return _ffn_params(c, sig.expansion)
    if k == "attn":
        return _attention_params(c, sig.resolution, sig.stride, sig.option("heads")) + _ffn_params(c, sig.expansion)
    if k == "embed":
        return _conv(c, sig.out_width, 3)
    if k == "attn_down":
        return _attn_down_params(c, sig.out_width, sig.resolution)
    if k == "head":
        return 2 * c + sig.heads * (c * sig.out_width + sig.out_width)
    raise ValueError(f"unknown signature kind {k!r}")


@functools.lru_cache(maxsize=None)
def signature_macs(sig: BlockSignature) -> int:
    """Multiply-accumulates of one piece for a batch of one."""
    k, c, r = sig.kind, sig.in_width, sig.resolution
    if k == "stem":
        half, r1 = sig.out_width // 2, _ceil_half(r)
        r2 = _ceil_half(r1)
        return r1 * r1 * half * 3 * 9 + r2 * r2 * sig.out_width * half * 9
    if k == "ffn":
        return _ffn_macs(c, sig.expansion, r)
    if k == "attn":
        return _attention_macs(c, r, sig.stride, sig.option("heads")) + _ffn_macs(c, sig.expansion, r)
    if k == "embed":
        ro = _ceil_half(r)
        return ro * ro * sig.out_width * c * 9
    if k == "attn_down":
        return _attn_down_macs(c, sig.out_width, r)
    if k == "head":
        return sig.heads * c * sig.out_width
    raise ValueError(f"unknown signature kind {k!r}")


# ------------------------------------------------------------------ enumeration
_INTERNED: dict[BlockSignature, BlockSignature] = {}


def interned(sig: BlockSignature) -> BlockSignature:
    """The canonical object equal to ``sig`` (equal signatures become identical: dict lookups skip __eq__)."""
    return _INTERNED.setdefault(sig, sig)


@functools.lru_cache(maxsize=None)
def stem_signature(width: int, image_size: int) -> BlockSignature:
    return interned(BlockSignature("stem", 3, width, image_size))


def option_columns() -> dict[str, tuple[str, str]]:
    """The LUT's column of each registered block option per block kind that has it: ``{"attn_heads": ("heads",
    "attn")}`` (a row of another kind holds 0 there)."""
    return {f"{kind}_{name}": (name, kind) for name, o in BLOCK_OPTIONS.items() for kind in o.kinds}


@functools.lru_cache(maxsize=None)
def block_signature(stage: int, block_type: str, width: int, expansion: int, resolution: int,
                    **options: int) -> BlockSignature:
    """Signature of an FFN or attention block of stage ``stage`` (0-based); ``options``: the block's option values
    (those its kind does not have are ignored)."""
    if block_type == "attn":
        return interned(BlockSignature("attn", width, width, resolution, expansion, stride=2 if stage == 2 else 1,
                                       options=options))
    return interned(BlockSignature("ffn", width, width, resolution, expansion, options=options))


@functools.lru_cache(maxsize=None)
def embedding_signatures(stage: int, in_width: int, out_width: int, resolution: int) -> tuple[BlockSignature, ...]:
    """Pieces of the embedding that enters stage ``stage`` (1..3) from a map of size ``resolution``."""
    embed = interned(BlockSignature("embed", in_width, out_width, resolution))
    if stage == 3:
        return embed, interned(BlockSignature("attn_down", in_width, out_width, resolution))
    return (embed,)


@functools.lru_cache(maxsize=None)
def head_signature(width: int, num_classes: int, distillation: bool, resolution: int) -> BlockSignature:
    return interned(BlockSignature("head", width, num_classes, resolution, heads=2 if distillation else 1))


def arch_signatures(arch: ArchConfig) -> Iterator[BlockSignature]:
    """Every piece of ``arch`` in network order: stem, stage blocks and embeddings, head."""
    widths, size = arch.widths, arch.image_size
    yield stem_signature(widths[0], size)
    for i, stage in enumerate(arch.stages):
        r = stage_resolution(size, i)
        if i > 0:
            yield from embedding_signatures(i, widths[i - 1], stage.width, stage_resolution(size, i - 1))
        for block in stage.blocks:
            yield block_signature(i, block.type, stage.width, block.expansion, r, **dict(block.options))
    yield head_signature(widths[-1], arch.num_classes, arch.distillation, stage_resolution(size, 3))


@functools.lru_cache(maxsize=65536)
def count_params(arch: ArchConfig) -> int:
    """Exact trainable-parameter count of ``build_model(arch)``, computed without building it."""
    return sum(signature_params(s) for s in arch_signatures(arch))


@functools.lru_cache(maxsize=65536)
def count_macs(arch: ArchConfig) -> int:
    """MACs of ``build_model(arch)`` for one image (convs, linears, the two attention matmuls)."""
    return sum(signature_macs(s) for s in arch_signatures(arch))
