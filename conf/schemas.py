"""Typed schemas of the Hydra configs (dataclasses in Hydra's ``ConfigStore``).

Every YAML file of a config group extends its group's schema (``defaults: [base_<group>, _self_]``),
and every app's primary config extends its app schema, so Hydra itself rejects a wrong type
(``search.n_trials=abc``) or an unknown key (``train.lrr=1``) at composition, with its own message.
Value constraints (``n_trials >= 1``, ``lr > 0``, one of a set of choices) are declared beside each
field as metadata and checked once by :func:`check_config`, which names the full key:
``eformer-search: error: search.n_trials: -5 must be >= 1``.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from conf.errors import UserError

CONF_DIR = Path(__file__).resolve().parent  # the config tree: conf/<group>/*.yaml

# the ONNX opsets the exporters write (supernet/onnx_export.py) and the settings accept
DYNAMO_MIN_OPSET = 18  # the lowest opset the torch.export-based exporter writes
DEFAULT_OPSET = DYNAMO_MIN_OPSET
MIN_OPSET = 17  # TorchScript exporter only
MAX_OPSET = 21  # the newest opset torch's exporter and onnxruntime both take here
EXPORTERS = ("auto", "dynamo", "torchscript", "fast")  # supernet/onnx_export.py's ONNX exporters
CHECKPOINT_SOURCES = ("official", "timm", "ours")  # the checkpoint layouts supernet/convert.py reads


def group_options(group: str) -> tuple[str, ...]:
    """The options of a config group: its YAML files (``conf/<group>/*.yaml``). The names a registry entry
    must match (``data.name``: the datasets; ``search.name``: the strategies)."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


def setting(default: Any = MISSING, *, ge: Optional[float] = None, gt: Optional[float] = None,
            le: Optional[float] = None, choices: Optional[tuple] = None, subset_of: Optional[tuple] = None,
            multiple_of: Optional[int] = None, nonempty: Optional[bool] = None) -> Any:
    """A dataclass field with value constraints (checked by :func:`check_config`)."""
    meta = {k: v for k, v in {"ge": ge, "gt": gt, "le": le, "choices": choices, "subset_of": subset_of,
                              "multiple_of": multiple_of, "nonempty": nonempty}.items() if v is not None}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------- lut / device

def typed(node: Any, schema: type) -> Any:
    """``node`` (a typed or plain config, or None) as an instance of the dataclass ``schema``: what an app hands
    below itself instead of a DictConfig."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node or {}))


def checked(node: Any, schema: type, prefix: str) -> Any:
    """``node`` (a plain mapping, a config, or an instance of ``schema``) typed as ``schema`` and checked like a
    composed config: an unknown key, a wrong type or a value out of range raises one ``UserError`` naming
    ``<prefix>.<key>`` (``<key>`` with an empty prefix)."""
    where = f"{prefix}." if prefix else ""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        node = dataclasses.asdict(node)
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(schema), node or {})
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        if isinstance(err, ConfigKeyError) and "." not in key:
            allowed = ", ".join(f.name for f in dataclasses.fields(schema))
            raise UserError(f"{where}{key}: unknown key; allowed: {allowed}") from None
        raise UserError(f"{where}{key}: {str(err).splitlines()[0]}") from None
    check_config(cfg, where)
    return OmegaConf.to_object(cfg)


@dataclasses.dataclass
class ProtocolSchema:
    warmup: int = setting(5, ge=0)
    repeats: int = setting(20, ge=1)
    number: int = setting(1, ge=1)
    cache: str = setting("warm", choices=("warm", "cold"))
    flush_mb: int = setting(0, ge=0)


@dataclasses.dataclass
class LutValidateSchema:
    members: int = setting(60, ge=4)
    seed: int = 0
    fit_fraction: float = setting(0.5, gt=0.0, le=0.9)
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)
    report_dir: Optional[str] = None
    passes: int = setting(2, ge=1, le=2)


@dataclasses.dataclass
class LutCheckSchema:
    members: int = setting(6, ge=2)
    seed: int = 1
    tolerance: float = setting(0.10, gt=0.0, le=1.0)
    required_share: float = setting(0.8, gt=0.0, le=1.0)
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)


@dataclasses.dataclass
class LutSchema:
    protocol: ProtocolSchema = dataclasses.field(default_factory=ProtocolSchema)
    statistic: str = setting("q25", choices=("q25", "median"))
    interleave: int = setting(16, ge=1)
    progress: bool = True
    limit: Optional[int] = setting(None, ge=1)
    validate: LutValidateSchema = dataclasses.field(default_factory=LutValidateSchema)
    check: LutCheckSchema = dataclasses.field(default_factory=LutCheckSchema)


@dataclasses.dataclass
class DeviceSchema:
    """What every device backend's config has; each backend's schema extends it (latency_lut/backends.py)."""
    name: str = MISSING
    backend: str = MISSING
    threads: int = setting(2, ge=1)


@dataclasses.dataclass
class OrtDeviceSchema(DeviceSchema):
    name: str = "ort-cpu"
    backend: str = setting("ort", choices=("ort",))
    providers: List[str] = setting(["CPUExecutionProvider"])
    threads: int = setting(2, ge=1)
    inter_op_threads: int = setting(1, ge=1)
    graph_optimization: str = setting("all", choices=("disable", "basic", "extended", "all"))
    allow_spinning: bool = False
    opset: int = setting(DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET)


@dataclasses.dataclass
class TorchDeviceSchema(DeviceSchema):
    name: str = "torch-cpu"
    backend: str = setting("torch", choices=("torch",))
    threads: int = setting(2, ge=1)
    deploy: bool = True


@dataclasses.dataclass
class CommandDeviceSchema(DeviceSchema):
    name: str = "subprocess-ort"
    backend: str = setting("command", choices=("command",))
    command: Optional[str] = None        # the template inline (Hydra quoting: "device.command='... {onnx} ...'")
    command_file: Optional[str] = None   # or a file holding the template (no shell or Hydra quoting needed)
    regex: str = r"median_ms=([0-9.]+)"
    timeout_s: float = setting(300.0, gt=0.0)
    threads: int = setting(2, ge=1)
    opset: int = setting(DEFAULT_OPSET, ge=MIN_OPSET, le=MAX_OPSET)


# ---------------------------------------------------------------------------------------------- supernet
@dataclasses.dataclass
class DataSchema:
    name: str = setting("fashion", choices=group_options("data"))  # each has its entry in supernet/data/registry.py
    root: Optional[str] = None
    image_size: int = setting(32, ge=32, le=2048, multiple_of=32)
    mean: List[float] = setting([0.5, 0.5, 0.5])
    std: List[float] = setting([0.5, 0.5, 0.5])
    train_scale: List[float] = setting([0.08, 1.0])
    train_ratio: List[float] = setting([0.75, 1.3333333])
    hflip: float = setting(0.5, ge=0.0, le=1.0)
    crop_pct: float = setting(0.875, gt=0.0, le=1.0)
    calib_size: int = setting(2000, ge=10)              # BN recalibration needs more than one image per statistic
    holdout: int = setting(0, ge=0)                     # training images held out as the search's val split
    num_workers: Optional[int] = setting(0, ge=0)       # null: as many as the CPUs (decoded images), 0 in memory
    seed: int = 0


@dataclasses.dataclass
class InitFromSchema:
    arch: str = MISSING
    weights: str = MISSING
    source: str = setting("official", choices=("official", "timm", "ours"))
    exclude_head: bool = True


@dataclasses.dataclass
class TrainSchema:
    epochs: int = setting(1, ge=1)
    batch_size: int = setting(128, ge=1)
    eval_batch_size: int = setting(500, ge=1)
    lr: float = setting(2e-3, gt=0.0)
    min_lr: float = setting(1e-5, ge=0.0)
    weight_decay: float = setting(0.05, ge=0.0)
    warmup_steps: int = setting(10, ge=0)
    label_smoothing: float = setting(0.1, ge=0.0, le=0.99)
    grad_clip: float = setting(5.0, gt=0.0)
    num_random: int = setting(2, ge=0)
    kd_temperature: float = setting(1.0, gt=0.0)
    inplace_distillation: bool = True
    distillation: bool = False
    drop_path_rate: float = setting(0.0, ge=0.0, le=0.99)
    layer_scale_init: float = setting(0.1, gt=0.0)
    checkpoint_every: int = setting(10, ge=1)
    bn_calib_batches: int = setting(1, ge=1)
    eval_presets: List[str] = setting(["s0", "s1", "s2", "l"], subset_of=("s0", "s1", "s2", "l"))
    seed: int = 0
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    channels_last: bool = True
    fused_optimizer: bool = True
    threads: Optional[int] = setting(None, ge=1)
    progress: bool = True
    init_from: Optional[InitFromSchema] = None


@dataclasses.dataclass
class FinetuneSchema:
    arch: Optional[str] = None
    weights: Optional[str] = None


# ---------------------------------------------------------------------------------------------- search
@dataclasses.dataclass
class BudgetSchema:
    preset: Optional[str] = setting(None, choices=("s0", "s1", "s2", "l"))
    latency_ms: Optional[float] = setting(None, gt=0.0)
    params_m: Optional[float] = setting(None, gt=0.0)


@dataclasses.dataclass
class SearchSchema:
    name: str = setting(MISSING, choices=group_options("search"))  # each has its entry in search/strategies.py


@dataclasses.dataclass
class SamplerSearchSchema(SearchSchema):
    n_trials: int = setting(100, ge=1)   # COMPLETE trials in the study, over all workers


@dataclasses.dataclass
class NSGA2SearchSchema(SamplerSearchSchema):
    population_size: int = setting(24, ge=2)


@dataclasses.dataclass
class TPESearchSchema(SamplerSearchSchema):
    n_startup_trials: int = setting(10, ge=0)
    multivariate: bool = True


def slimming_actions() -> tuple[str, ...]:
    """The slimming actions: ``search.actions`` of ``conf/search/slimming.yaml`` (every dimension's action; a test
    keeps them equal to ``supernet.dimensions.ACTION_KINDS``: conf cannot import supernet's package, a cycle)."""
    text = (CONF_DIR / "search" / "slimming.yaml").read_text(encoding="utf-8")
    return tuple(OmegaConf.create(text)["actions"])


SLIMMING_ACTIONS = slimming_actions()


@dataclasses.dataclass
class SlimmingSearchSchema(SearchSchema):
    actions: List[str] = setting(list(SLIMMING_ACTIONS), subset_of=SLIMMING_ACTIONS, nonempty=True)
    expansion_scope: str = setting("block", choices=("block", "stage"))
    moves_per_step: int = setting(1, ge=1)
    max_steps: int = setting(500, ge=1)
    score_by: str = setting("loss", choices=("loss", "top1"))
    race: bool = False                                       # screen candidates on part of the split first
    screen_fraction: float = setting(0.2, gt=0.0, le=1.0)
    race_z: float = setting(2.0, ge=0.0)


@dataclasses.dataclass
class MesSchema:
    """Mobile Efficiency Score: score * prod (M / U) ** -alpha; a unit is a number or a preset name (s0, ...)."""
    units: Dict[str, Any] = setting({"latency_ms": "s0", "params_m": 3.5})
    exponents: Dict[str, float] = setting({"latency_ms": 0.5, "params_m": 0.5})
    score: float = setting(100.0, gt=0.0)


@dataclasses.dataclass
class StorageSchema:
    kind: str = setting(MISSING, choices=("sqlite", "journal", "url", "memory"))
    file: Optional[str] = None
    url: Optional[str] = None
    heartbeat_s: float = setting(5.0, gt=0.0)
    grace_s: float = setting(30.0, gt=0.0)


@dataclasses.dataclass
class ProxySchema:
    kind: str = setting("supernet", choices=("supernet", "analytic"))
    calib_images: Optional[int] = setting(None, ge=2)
    val_images: Optional[int] = setting(None, ge=1)
    batch_size: int = setting(500, ge=2)
    memory_mb: float = setting(512.0, gt=0.0)
    precision: str = setting("fp32", choices=("fp32", "bf16", "fp16"))
    data: Optional[Any] = None
    cache: Optional[str] = None


# ---------------------------------------------------------------------------------------------- apps
@dataclasses.dataclass
class TrainApp:
    space: Any = MISSING   # open by design: checked by SearchSpace.from_dict, which names the dimension at fault
    data: DataSchema = MISSING
    train: TrainSchema = MISSING
    finetune: FinetuneSchema = dataclasses.field(default_factory=FinetuneSchema)
    compute_device: str = "auto"
    run_dir: str = MISSING


@dataclasses.dataclass
class LutApp:
    space: Any = MISSING   # open by design: checked by SearchSpace.from_dict, which names the dimension at fault
    device: DeviceSchema = MISSING
    lut: LutSchema = MISSING
    command: str = setting("build", choices=("build", "validate", "show", "predict", "check"))
    image_size: int = setting(224, ge=32, le=2048, multiple_of=32)
    num_classes: int = setting(1000, ge=1, le=100000)
    distillation: bool = True
    batch_size: int = setting(1, ge=1, le=1024)
    arch_file: Optional[str] = None
    out: str = MISSING


@dataclasses.dataclass
class SearchApp:
    search: SearchSchema = MISSING
    storage: StorageSchema = MISSING
    budget: BudgetSchema = MISSING
    supernet: str = MISSING
    lut_file: str = MISSING
    proxy: ProxySchema = dataclasses.field(default_factory=ProxySchema)
    compute_device: str = "auto"
    mes: MesSchema = dataclasses.field(default_factory=MesSchema)
    seed: int = 0
    worker: int = setting(0, ge=0)
    threads: Optional[int] = setting(None, ge=1)
    progress: bool = True
    run_dir: str = MISSING
    study_name: Optional[str] = None


@dataclasses.dataclass
class MeasureSchema:
    warmup: int = setting(3, ge=0)
    repeats: int = setting(15, ge=1)


@dataclasses.dataclass
class PipelineApp:
    work_dir: str = "runs/pipeline"
    search_space: str = "efficientformerv2"   # a conf/space name: the LUT's and the supernet's space
    lut_overrides: List[str] = setting([])
    train_overrides: List[str] = setting([])
    budgets: List[str] = setting(["s0", "s1", "s2", "l"], subset_of=("s0", "s1", "s2", "l"), nonempty=True)
    slimming_overrides: List[str] = setting([])
    nsga2_overrides: List[str] = setting([])
    measure: MeasureSchema = dataclasses.field(default_factory=MeasureSchema)
    exporter: str = setting("fast", choices=EXPORTERS)
    compute_device: str = "auto"
    progress: bool = True


@dataclasses.dataclass
class ValidateProxyApp:
    supernet: str = MISSING
    lut_file: str = MISSING
    members: int = setting(20, ge=3)
    pool: int = setting(400, ge=3)
    seed: int = 0
    standalone_seeds: int = setting(2, ge=2)   # seeds 0..n-1 per member: the seed-mean target and its split-half ceiling
    standalone_dir: Optional[str] = None       # where the standalone runs live (None: run_dir/standalone)
    bootstrap: int = setting(2000, ge=100)     # resamples of each tau's 90 % interval
    compute_device: str = "auto"
    threads: Optional[int] = setting(None, ge=1)
    progress: bool = True
    run_dir: str = MISSING


SCHEMAS: dict[tuple[Optional[str], str], type] = {
    (None, "base_eformer_train"): TrainApp,
    (None, "base_eformer_lut"): LutApp,
    (None, "base_eformer_search"): SearchApp,
    (None, "base_eformer_pipeline"): PipelineApp,
    (None, "base_eformer_validate_proxy"): ValidateProxyApp,
    ("train", "base_train"): TrainSchema,
    ("data", "base_data"): DataSchema,
    ("lut", "base_lut"): LutSchema,
    ("device", "base_ort"): OrtDeviceSchema,
    ("device", "base_torch"): TorchDeviceSchema,
    ("device", "base_command"): CommandDeviceSchema,
    ("budget", "base_budget"): BudgetSchema,
    ("storage", "base_storage"): StorageSchema,
    ("search", "base_nsga2"): NSGA2SearchSchema,
    ("search", "base_tpe"): TPESearchSchema,
    ("search", "base_mes"): TPESearchSchema,
    ("search", "base_random"): SamplerSearchSchema,
    ("search", "base_slimming"): SlimmingSearchSchema,
}


def register_schemas() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent; each app calls it at import)."""
    cs = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        cs.store(group=group, name=name, node=node)


def _violation(value: Any, meta: dict[str, Any]) -> Optional[str]:
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if "choices" in meta and value not in meta["choices"]:
        return f"is not one of {', '.join(map(str, meta['choices']))}"
    if "subset_of" in meta:
        bad = [v for v in value if v not in meta["subset_of"]]
        if bad or (not value and meta.get("nonempty")):
            which = f"give a {'non-empty ' if meta.get('nonempty') else ''}subset of {', '.join(meta['subset_of'])}"
            return which + (f" ({bad[0]!r} is not one)" if bad else "")
    if "ge" in meta and value < meta["ge"]:
        return f"must be >= {meta['ge']:g}"
    if "gt" in meta and value <= meta["gt"]:
        return f"must be > {meta['gt']:g}"
    if "le" in meta and value > meta["le"]:
        return f"must be <= {meta['le']:g}"
    if "multiple_of" in meta and value % meta["multiple_of"]:
        return f"is not a multiple of {meta['multiple_of']} (the network downsamples by 32)"
    return None


def check_config(cfg: DictConfig, prefix: str = "", app: Optional[type] = None) -> None:
    """Check the declared value constraints of every typed node of ``cfg``; the first violation
    raises ``UserError('<full.key>: <value> <what was expected>')``. With ``app`` (an ``*App`` schema), also
    refuse the config of another app (``--config-name`` of another command)."""
    schema = OmegaConf.get_type(cfg)
    if app is not None and schema is not app:
        mine = next(name for (_, name), kind in SCHEMAS.items() if kind is app).removeprefix("base_")
        raise UserError(f"--config-name: this command runs the {mine} config, not a {getattr(schema, '__name__', schema)} one")
    meta = {f.name: dict(f.metadata) for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else {}
    for key in cfg.keys():
        where = f"{prefix}{key}"
        if OmegaConf.is_missing(cfg, key):
            raise UserError(f"{where}: required (give {where}=...)")
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            if not node._is_none():
                check_config(node, where + ".")
            continue
        if key in meta and meta[key]:
            value = OmegaConf.to_container(node, resolve=True) if isinstance(node, ListConfig) else cfg[key]
            problem = _violation(value, meta[key])
            if problem:
                raise UserError(f"{where}: {value!r} {problem}")
