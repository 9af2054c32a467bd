"""The accuracy proxies ``proxy.kind`` selects: a new proxy is one builder registered in :data:`PROXIES`.

A builder takes the typed ``proxy`` settings (``ProxySchema``), the supernet, the digest of its file (for the
score cache's key) and the compute device, and returns an :class:`~search.proxy.AccuracyProxy`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional

from conf.registry import Registry
from conf.schemas import ProxySchema
from search.proxy import AccuracyProxy, AnalyticProxy, SupernetProxy
from supernet.compute import resolve_device
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.io_utils import make_dir
from supernet.train.precision import resolve_precision

ProxyBuilder = Callable[[ProxySchema, Supernet, str, str], AccuracyProxy]
PROXIES: Registry[ProxyBuilder] = Registry("proxy.kind", "proxy")  # names: ProxySchema.kind's choices


def supernet_data(supernet: Supernet, override: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The data the proxy evaluates on: ``proxy.data`` if given, else the supernet's training data."""
    if override:
        return override
    tc = getattr(supernet, "train_config", None) or {}
    data = {k[len("data."):]: v for k, v in tc.items() if k.startswith("data.")}
    if not data:
        raise UserError(f"{supernet.source_path}: records no training data; give proxy.data (a data config)")
    return data


def analytic_proxy(p: ProxySchema, supernet: Supernet, supernet_digest: str, compute_device: str) -> AccuracyProxy:
    return AnalyticProxy()


def weight_sharing_proxy(p: ProxySchema, supernet: Supernet, supernet_digest: str, compute_device: str) -> AccuracyProxy:
    """The supernet scores each member on the search split after BN recalibration (cached by a key of everything
    that changes a score)."""
    device = resolve_device(compute_device)
    precision = resolve_precision(p.precision, device, key="proxy.precision")
    data_cfg = supernet_data(supernet, dict(p.data) if p.data else None)
    data = build_data(data_cfg)
    # format 3: val_images / calib_images are seeded class-balanced choices, scored in batches of batch_size
    key = json.dumps({"supernet": supernet_digest, "data": data_cfg, "calib": p.calib_images, "val": p.val_images,
                      "split": data.search_split, "batch_size": p.batch_size, "precision": p.precision,
                      "device": device.type, "format": 3},
                     sort_keys=True, default=str)
    cache = Path(p.cache) if p.cache else None
    if cache is not None:
        make_dir(cache.parent, "proxy.cache")
    return SupernetProxy.from_data(supernet, data, p.calib_images, p.val_images, cache,
                                   hashlib.sha256(key.encode()).hexdigest()[:16], device=device,
                                   batch_size=p.batch_size, memory_mb=p.memory_mb, precision=precision)


PROXIES.register("supernet", weight_sharing_proxy)
PROXIES.register("analytic", analytic_proxy)


def build_proxy(p: ProxySchema, supernet: Supernet, supernet_digest: str, compute_device: str) -> AccuracyProxy:
    """The proxy ``p.kind`` names (one line naming ``proxy.kind`` when none is registered)."""
    return PROXIES.get_or_fail(p.kind)(p, supernet, supernet_digest, compute_device)


def proxy_description(proxy: AccuracyProxy) -> dict[str, Any]:
    """What the proxy scored on: split, image counts and compute device (supernet proxies)."""
    if not isinstance(proxy, SupernetProxy):
        return {}
    return {"split": proxy.val.split, "images": len(proxy.val.labels), "calib_images": len(proxy.calib.labels),
            "batch_size": proxy.val.batch_size, "device": str(proxy.device), "precision": proxy.precision.name}
