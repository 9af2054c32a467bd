"""Typing and checking configs against their schemas: the one place a value constraint becomes a one-line error."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from conf.errors import UserError
from conf.schemas.apps import SCHEMAS


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
