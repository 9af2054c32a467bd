"""The Hydra configuration tree shipped with the package (config groups mirror the packages).

``conf`` is the bottom of the package graph: its modules import nothing of ``supernet``, ``latency_lut`` or
``search``, which all import it (the typed settings, :class:`~conf.errors.UserError`, the registries)."""
from __future__ import annotations

from typing import Sequence

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from conf.schemas import CONF_DIR, register_schemas

__all__ = ["CONF_DIR", "compose"]


def compose(app: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The config an app (``eformer_train``, ``eformer_lut``, ``eformer_search``) would run with these
    command-line overrides, for driving the apps from Python (the pipeline, experiments, tests)."""
    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=app, overrides=list(overrides))
