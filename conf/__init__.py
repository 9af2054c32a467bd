"""The Hydra configuration tree shipped with the package (config groups mirror the packages)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parent


def compose(app: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config an app (``eformer_train``, ``eformer_lut``, ``eformer_search``) would run with these
    command-line overrides, for driving the apps from Python (the pipeline, experiments, tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from conf.schemas import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=app, overrides=list(overrides))
