"""Typed schemas of the Hydra configs (dataclasses in Hydra's ``ConfigStore``).

Every YAML file of a config group extends its group's schema (``defaults: [base_<group>, _self_]``),
and every app's primary config extends its app schema, so Hydra itself rejects a wrong type
(``search.n_trials=abc``) or an unknown key (``train.lrr=1``) at composition, with its own message.
Value constraints (``n_trials >= 1``, ``lr > 0``, one of a set of choices) are declared beside each
field as metadata and checked once by :func:`check_config`, which names the full key:
``eformer-search: error: search.n_trials: -5 must be >= 1``.
"""
from __future__ import annotations

from conf.schemas.apps import SCHEMAS, LutApp, MeasureSchema, PipelineApp, SearchApp, TrainApp, ValidateProxyApp, register_schemas
from conf.schemas.check import check_config, checked, typed
from conf.schemas.fields import CONF_DIR, group_options, setting
from conf.schemas.latency_lut import (
    CommandDeviceSchema,
    DeviceSchema,
    LutCheckSchema,
    LutSchema,
    LutValidateSchema,
    OrtDeviceSchema,
    ProtocolSchema,
    TorchDeviceSchema,
)
from conf.schemas.search import (
    SLIMMING_ACTIONS,
    BudgetSchema,
    MesSchema,
    NSGA2SearchSchema,
    ProxySchema,
    SamplerSearchSchema,
    SearchSchema,
    SlimmingSearchSchema,
    StorageSchema,
    TPESearchSchema,
    slimming_actions,
)
from conf.schemas.supernet import DataSchema, FinetuneSchema, InitFromSchema, TrainSchema
from conf.schemas.vocabularies import CHECKPOINT_SOURCES, DEFAULT_OPSET, DYNAMO_MIN_OPSET, EXPORTERS, MAX_OPSET, MIN_OPSET

__all__ = [
    "SCHEMAS", "LutApp", "MeasureSchema", "PipelineApp", "SearchApp", "TrainApp", "ValidateProxyApp", "register_schemas",
    "check_config", "checked", "typed", "CONF_DIR", "group_options", "setting",
    "CommandDeviceSchema", "DeviceSchema", "LutCheckSchema", "LutSchema", "LutValidateSchema", "OrtDeviceSchema",
    "ProtocolSchema", "TorchDeviceSchema",
    "SLIMMING_ACTIONS", "BudgetSchema", "MesSchema", "NSGA2SearchSchema", "ProxySchema", "SamplerSearchSchema",
    "SearchSchema", "SlimmingSearchSchema", "StorageSchema", "TPESearchSchema", "slimming_actions",
    "DataSchema", "FinetuneSchema", "InitFromSchema", "TrainSchema",
    "CHECKPOINT_SOURCES", "DEFAULT_OPSET", "DYNAMO_MIN_OPSET", "EXPORTERS", "MAX_OPSET", "MIN_OPSET",
]
