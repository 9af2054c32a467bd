"""ArchConfig: the validated description of one EfficientFormerV2 network.

It is the one vocabulary shared by the model builder, the analytic cost model, the supernet, the
latency lookup table and the search. Presets (s0, s1, s2, l) live as YAML in ``supernet/presets/``.
"""
from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from supernet.errors import UserError
from supernet.io_utils import atomic_write_text, read_yaml_mapping

NUM_STAGES = 4
BLOCK_TYPES = ("ffn", "attn")
ATTN_STAGES = (2, 3)  # zero-based: attention blocks live in stages 3 and 4 only
ALLOWED_EXPANSIONS = (1, 2, 3, 4, 5, 6)
WIDTH_MULTIPLE = 8
IMAGE_MULTIPLE = 32
PRESETS = ("s0", "s1", "s2", "l")


class ArchConfigError(UserError):
    """An architecture description breaks a rule; the message names the field and the rule."""


@dataclasses.dataclass(frozen=True)
class BlockOption:
    """A per-block value beyond the block's kind and expansion, which a per-block dimension of the search space
    defines and registers (:func:`register_block_option`; :mod:`supernet.dimensions` holds them). Blocks of other kinds
    hold the default; a block whose value is the default writes nothing (its YAML, hash and summary stay as they
    were before the option existed)."""

    name: str                   # its key in a block's YAML and in ``BlockConfig.options``
    default: int                # the release's value
    kinds: tuple[str, ...]      # the block kinds that have it
    low: int
    high: int
    tag: str                    # its letter in :meth:`ArchConfig.summary` and in signature keys
    holders: str                # who has it, for errors: "attention blocks"


BLOCK_OPTIONS: dict[str, BlockOption] = {}


def register_block_option(option: BlockOption) -> BlockOption:
    """Make ``option`` a key of every block (a per-block dimension's module registers its own)."""
    if BLOCK_OPTIONS.get(option.name, option) != option:
        raise ValueError(f"block option {option.name!r} is registered twice, differently")
    BLOCK_OPTIONS[option.name] = option
    return option


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """One block of a stage: an FFN block or an attention block (attention + FFN), and its values of the
    registered block options (``options``: a mapping or pairs; kept as the sorted pairs that differ from the
    option's default, so equal blocks compare and hash equal). An option reads as an attribute (``block.<name>``)."""

    type: str
    expansion: int
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.options, (Mapping, tuple, list)):
            raise TypeError(f"BlockConfig.options: a mapping of block options (e.g. {{'heads': 4}}), not {self.options!r}")
        pairs = self.options.items() if isinstance(self.options, Mapping) else self.options
        kept = tuple(sorted((k, v) for k, v in pairs  # what is not a registered option's default, as an int
                            if k not in BLOCK_OPTIONS or type(v) is not int or v != BLOCK_OPTIONS[k].default))
        object.__setattr__(self, "options", kept)

    def __getattr__(self, name: str) -> Any:
        option = BLOCK_OPTIONS.get(name)
        if option is None or name == "options":
            raise AttributeError(name)
        return dict(self.options).get(name, option.default)

    def option_values(self) -> dict[str, Any]:
        """Every registered option that a block of this kind has, with its value (the default included)."""
        return {name: getattr(self, name) for name, o in BLOCK_OPTIONS.items() if self.type in o.kinds}

    def fields(self) -> dict[str, Any]:
        """Its written form: the options only where they are not the default."""
        return {"type": self.type, "expansion": self.expansion, **dict(self.options)}


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One stage: its channel width and its ordered blocks."""

    width: int
    blocks: tuple[BlockConfig, ...]

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def num_attn(self) -> int:
        return sum(b.type == "attn" for b in self.blocks)

    @property
    def num_ffn(self) -> int:
        return sum(b.type == "ffn" for b in self.blocks)


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """A validated, immutable, hashable description of one network."""

    stages: tuple[StageConfig, ...]
    image_size: int = 224
    num_classes: int = 1000
    distillation: bool = True
    drop_path_rate: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        _validate(self)

    # ----------------------------------------------------------------- views
    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.stages)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(s.depth for s in self.stages)

    @property
    def expansions(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(b.expansion for b in s.blocks) for s in self.stages)

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def resolution(self, stage: int) -> int:
        """Spatial size of stage ``stage`` (0-based): ceil(image / 2**(stage + 2))."""
        return stage_resolution(self.image_size, stage)

    def summary(self) -> str:
        """Compact one-line description, e.g. ``w32-48-96-176 d2-2-6-4 a0-0-2-2``."""
        w = "-".join(str(x) for x in self.widths)
        d = "-".join(str(x) for x in self.depths)
        a = "-".join(str(s.num_attn) for s in self.stages)
        e = "/".join("".join(str(x) for x in s) for s in self.expansions)
        opts = "".join(f" {BLOCK_OPTIONS[name].tag}" + "/".join(".".join(map(str, row)) or "-" for row in self.option_rows(name))
                       for name in self.searched_options())  # an option only where some block is not at its default
        return f"w{w} d{d} a{a} e{e}{opts}"

    def option_rows(self, name: str) -> list[list[Any]]:
        """The values of block option ``name`` per stage, over the blocks of the kinds that have it."""
        kinds = BLOCK_OPTIONS[name].kinds
        return [[getattr(b, name) for b in s.blocks if b.type in kinds] for s in self.stages]

    def searched_options(self) -> list[str]:
        """The block options some block holds at other than the default (registry order)."""
        held = {k for s in self.stages for b in s.blocks for k, _ in b.options}
        return [name for name in BLOCK_OPTIONS if name in held]

    def replace(self, **changes: Any) -> "ArchConfig":
        """A copy with some top-level fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "distillation": self.distillation,
            "drop_path_rate": self.drop_path_rate,
            "stages": [
                {"width": s.width, "blocks": [b.fields() for b in s.blocks]}
                for s in self.stages
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "arch") -> "ArchConfig":
        """Build from a plain mapping (e.g. parsed YAML or a Hydra node); every error names its field."""
        return _parse(data, source)

    @classmethod
    def from_parts(
        cls,
        widths: Sequence[int],
        expansions: Sequence[Sequence[int]],
        num_attn: Sequence[int] = (0, 0, 0, 0),
        options: Mapping[str, Sequence[Sequence[int]]] | None = None,
        **kwargs: Any,
    ) -> "ArchConfig":
        """Build from widths, per-block expansions and per-stage attention counts (attention blocks last), and
        optionally per-block values of block options (``{name: [[value per block] per stage]}``; default: the options'
        defaults)."""
        options = options or {}
        stages = []
        for i, (width, exps, n_attn) in enumerate(zip(widths, expansions, num_attn)):
            n = len(exps)
            blocks = tuple(
                BlockConfig("attn" if j >= n - n_attn else "ffn", int(e), {k: int(v[i][j]) for k, v in options.items()})
                for j, e in enumerate(exps)
            )
            stages.append(StageConfig(int(width), blocks))
        return cls(stages=tuple(stages), **kwargs)

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """Serialise to YAML (blocks in flow style); write atomically to ``path`` if given."""
        lines = [
            f"name: {self.name}",
            f"image_size: {self.image_size}",
            f"num_classes: {self.num_classes}",
            f"distillation: {str(self.distillation).lower()}",
            f"drop_path_rate: {self.drop_path_rate!r}",
            "stages:",
        ]
        for s in self.stages:
            lines.append(f"  - width: {s.width}")
            lines.append("    blocks:")
            for b in s.blocks:
                lines.append("      - {" + ", ".join(f"{k}: {v}" for k, v in b.fields().items()) + "}")
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> "ArchConfig":
        """Load and validate a YAML file; errors name the file and the field."""
        p = Path(path)
        data = read_yaml_mapping(p, ArchConfigError, "architecture")
        return _parse(data, str(p))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ArchConfig":
        """One of the released configurations (s0, s1, s2, l), loaded from supernet/presets/<name>.yaml."""
        key = name.lower()
        if key not in PRESETS:
            raise ArchConfigError(f"unknown preset {name!r}: expected one of {', '.join(PRESETS)}")
        arch = cls.from_yaml(preset_path(key))
        return arch.replace(**overrides) if overrides else arch

    @classmethod
    def resolve(cls, spec: "str | os.PathLike | Mapping[str, Any] | ArchConfig", **overrides: Any) -> "ArchConfig":
        """Accept a preset name, a YAML path, a mapping or an ArchConfig."""
        if isinstance(spec, ArchConfig):
            arch = spec
        elif isinstance(spec, Mapping):
            arch = cls.from_dict(spec)
        elif str(spec).lower() in PRESETS:
            arch = cls.preset(str(spec))
        else:
            try:
                os.stat(spec)
            except (FileNotFoundError, NotADirectoryError):
                raise ArchConfigError(
                    f"arch {str(spec)!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file"
                ) from None
            except OSError:
                pass  # there but unreadable: the guarded read below names the problem
            arch = cls.from_yaml(spec)
        return arch.replace(**overrides) if overrides else arch


def stage_resolution(image_size: int, stage: int) -> int:
    """Spatial size of stage ``stage`` (0-based) for an input of ``image_size``: ceil(image / 2**(stage + 2))."""
    return -(-image_size // 2 ** (stage + 2))


def preset_path(name: str) -> Path:
    """Path of a preset YAML shipped in the ``supernet`` package (supernet/presets/<name>.yaml)."""
    return Path(str(importlib.resources.files("supernet") / "presets" / f"{name}.yaml"))


# --------------------------------------------------------------------- parsing
_TOP_KEYS = ("name", "image_size", "num_classes", "distillation", "drop_path_rate", "stages")


def _unknown_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    extra = [k for k in data if k not in allowed]
    if extra:
        raise ArchConfigError(
            f"{where}: unknown key(s) {', '.join(map(str, extra))}; allowed: {', '.join(allowed)}"
        )


def _as_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchConfigError(f"{field}: {value!r} is not an integer")
    return value


def _parse(data: Mapping[str, Any], source: str) -> ArchConfig:
    if not isinstance(data, Mapping):
        raise ArchConfigError(f"{source}: expected a mapping, got {type(data).__name__}")
    _unknown_keys(data, _TOP_KEYS, source)
    if "stages" not in data:
        raise ArchConfigError(f"{source}: missing required key 'stages'")
    raw_stages = data["stages"]
    if not isinstance(raw_stages, Sequence) or isinstance(raw_stages, (str, bytes)):
        raise ArchConfigError(f"stages: expected a list of {NUM_STAGES} stages")
    stages = []
    for i, raw in enumerate(raw_stages):
        if not isinstance(raw, Mapping):
            raise ArchConfigError(f"stages[{i}]: expected a mapping with 'width' and 'blocks'")
        _unknown_keys(raw, ("width", "blocks"), f"stages[{i}]")
        for key in ("width", "blocks"):
            if key not in raw:
                raise ArchConfigError(f"stages[{i}]: missing required key '{key}'")
        raw_blocks = raw["blocks"]
        if not isinstance(raw_blocks, Sequence) or isinstance(raw_blocks, (str, bytes)):
            raise ArchConfigError(f"stages[{i}].blocks: expected a list of blocks")
        blocks = []
        for j, rb in enumerate(raw_blocks):
            where = f"stages[{i}].blocks[{j}]"
            if not isinstance(rb, Mapping):
                raise ArchConfigError(f"{where}: expected a mapping with 'type' and 'expansion'")
            _unknown_keys(rb, ("type", "expansion", *BLOCK_OPTIONS), where)
            for key in ("type", "expansion"):
                if key not in rb:
                    raise ArchConfigError(f"{where}: missing required key '{key}'")
            blocks.append(BlockConfig(rb["type"], rb["expansion"], {k: rb[k] for k in BLOCK_OPTIONS if k in rb}))
        stages.append(StageConfig(width=raw["width"], blocks=tuple(blocks)))
    kwargs = {k: data[k] for k in _TOP_KEYS if k in data and k != "stages"}
    return ArchConfig(stages=tuple(stages), **kwargs)


# sane bounds: refused before anything is allocated (L has widths up to 384, 15 blocks a stage)
MAX_WIDTH, MAX_BLOCKS, MAX_IMAGE_SIZE, MAX_CLASSES = 4096, 64, 2048, 100_000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")  # names become file names: no paths, no oddities


def _validate(arch: ArchConfig) -> None:
    if not isinstance(arch.name, str) or not _NAME.fullmatch(arch.name):
        shown = repr(arch.name) if len(str(arch.name)) <= 60 else repr(str(arch.name)[:60]) + "..."
        raise ArchConfigError(f"name: {shown} is not a file-safe name (1-100 letters, digits, '.', '_', '+', '-', "
                              "starting with a letter or digit)")
    size = _as_int(arch.image_size, "image_size")
    if size <= 0 or size > MAX_IMAGE_SIZE:
        raise ArchConfigError(f"image_size: image size {size} must be in 1..{MAX_IMAGE_SIZE}")
    if size % IMAGE_MULTIPLE:
        raise ArchConfigError(f"image_size: image size {size} is not a multiple of {IMAGE_MULTIPLE}")
    classes = _as_int(arch.num_classes, "num_classes")
    if not 1 <= classes <= MAX_CLASSES:
        raise ArchConfigError(f"num_classes: {classes} must be in 1..{MAX_CLASSES}")
    if not isinstance(arch.distillation, bool):
        raise ArchConfigError(f"distillation: {arch.distillation!r} is not true or false")
    dpr = arch.drop_path_rate
    if isinstance(dpr, bool) or not isinstance(dpr, (int, float)) or not 0.0 <= dpr < 1.0:
        raise ArchConfigError(f"drop_path_rate: {dpr!r} must be a number in [0, 1)")
    if len(arch.stages) != NUM_STAGES:
        raise ArchConfigError(f"stages: expected exactly {NUM_STAGES} stages, got {len(arch.stages)}")
    for i, stage in enumerate(arch.stages):
        width = _as_int(stage.width, f"stages[{i}].width")
        if width <= 0 or width % WIDTH_MULTIPLE or width > MAX_WIDTH:
            raise ArchConfigError(f"stages[{i}].width: {width} is not a positive multiple of {WIDTH_MULTIPLE} up to {MAX_WIDTH}")
        if not stage.blocks or len(stage.blocks) > MAX_BLOCKS:
            raise ArchConfigError(f"stages[{i}].blocks: a stage needs 1..{MAX_BLOCKS} blocks, got {len(stage.blocks)}")
        for j, block in enumerate(stage.blocks):
            where = f"stages[{i}].blocks[{j}]"
            if block.type not in BLOCK_TYPES:
                raise ArchConfigError(f"{where}.type: {block.type!r} is not one of {', '.join(BLOCK_TYPES)}")
            if block.type == "attn" and i not in ATTN_STAGES:
                raise ArchConfigError(
                    f"{where}.type: attention blocks are only allowed in stages 3 and 4 (this is stage {i + 1})"
                )
            exp = block.expansion
            if isinstance(exp, bool) or exp not in ALLOWED_EXPANSIONS or not isinstance(exp, int):
                raise ArchConfigError(
                    f"{where}.expansion: {exp!r} is not one of {', '.join(map(str, ALLOWED_EXPANSIONS))}"
                )
            for name, value in block.options:
                option = BLOCK_OPTIONS.get(name)
                if option is None:
                    raise ArchConfigError(f"{where}: unknown key {name}; allowed: {', '.join(('type', 'expansion', *BLOCK_OPTIONS))}")
                if isinstance(value, bool) or not isinstance(value, int) or not option.low <= value <= option.high:
                    raise ArchConfigError(f"{where}.{name}: {value!r} must be an integer in {option.low}..{option.high}")
                if block.type not in option.kinds:
                    raise ArchConfigError(f"{where}.{name}: only {option.holders} have {name} (this is an "
                                          f"{block.type.upper()} block)")
