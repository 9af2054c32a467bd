"""Each command's primary config schema, and the registry of every schema in Hydra's ConfigStore."""
from __future__ import annotations

import dataclasses
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from conf.schemas.fields import setting
from conf.schemas.latency_lut import CommandDeviceSchema, DeviceSchema, LutSchema, OrtDeviceSchema, TorchDeviceSchema
from conf.schemas.search import (
    BudgetSchema,
    MesSchema,
    NSGA2SearchSchema,
    ProxySchema,
    SamplerSearchSchema,
    SearchSchema,
    SlimmingSearchSchema,
    StorageSchema,
    TPESearchSchema,
)
from conf.schemas.supernet import DataSchema, FinetuneSchema, TrainSchema
from conf.schemas.vocabularies import EXPORTERS


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

