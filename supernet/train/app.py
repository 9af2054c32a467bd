"""``eformer-train``: train the weight-sharing supernet (Hydra app; conf/eformer_train.yaml).

    eformer-train                                   # digits, default space, runs/train/digits-efficientformerv2
    eformer-train space=tiny train.epochs=2 run_dir=runs/tiny
    torchrun --nproc_per_node=8 -m supernet.train.app data=imagefolder data.root=/data/imagenet
    eformer-train finetune.arch=export/x.yaml finetune.weights=export/x.pt run_dir=runs/finetune/x

Fine-tuning mode (``finetune.arch=`` an ArchConfig YAML or preset, optionally ``finetune.weights=``
its exported weights): the same loop trains that one member (no sandwich) and also writes model.pt.

Rerunning the same command resumes from the run directory's checkpoint (or does nothing if the
run is complete). Outputs in ``run_dir``: checkpoint.pt, supernet.pt (final), train_log.jsonl (per
step), metrics.jsonl / metrics.csv (per epoch: largest, smallest and the presets after BN
recalibration), final.json.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from conf.schemas import TrainApp, check_config, register_schemas, typed
from supernet.errors import report_user_errors, run_hydra_app

register_schemas()


def run_training(cfg: DictConfig | TrainApp) -> Path:
    """Train (or resume, or confirm complete) the run in ``cfg.run_dir``; returns the supernet file. ``cfg``: a
    composed config (checked and typed here, the app's boundary) or settings already typed and checked."""
    if not isinstance(cfg, TrainApp):
        check_config(cfg, app=TrainApp)
        cfg = typed(cfg, TrainApp)
    from supernet.compute import resolve_device  # torch loads after the options are checked
    from supernet.host_memory import reuse_freed_memory
    from supernet.train.trainer import Trainer

    resolve_device(cfg.compute_device)  # before any work (torchrun ranks resolve their own GPU again)
    reuse_freed_memory()
    return Trainer(cfg).run()


@hydra.main(config_path="../../conf", config_name="eformer_train", version_base="1.3")
@report_user_errors("eformer-train")
def _hydra_main(cfg: DictConfig) -> None:
    run_training(per_job_run_dir(cfg))


def main() -> None:
    """``eformer-train [overrides]`` (also ``python -m supernet.train.app`` under torchrun)."""
    run_hydra_app("eformer-train", _hydra_main)


def per_job_run_dir(cfg: DictConfig) -> DictConfig:
    """Under ``-m`` every job of a sweep gets its own run directory: ``<run_dir>/<its overrides>`` (e.g.
    ``runs/train/fashion-efficientformerv2/train.lr=0.001``), so jobs neither share nor resume each other's run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        suffix = HydraConfig.get().job.override_dirname
        if suffix:
            cfg.run_dir = str(Path(cfg.run_dir) / suffix)
    return cfg


if __name__ == "__main__":
    main()
