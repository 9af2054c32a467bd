"""Metrics of a candidate: proxy accuracy (from an accuracy proxy), latency (LUT), parameters and
MACs (analytic), and the Mobile Efficiency Score.

Latency, parameters, MACs and MES are those of the architecture as deployed (the LUT's context:
image size, classes, heads); accuracy is the proxy's (e.g. the Fashion-MNIST supernet member's).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from latency_lut.lut import LatencyLUT
from latency_lut.mes import mes
from search.params import arch_hash
from search.proxy import AccuracyProxy
from supernet.arch import ArchConfig
from supernet.errors import UserError
from supernet.signatures import count_macs, count_params


@dataclasses.dataclass(frozen=True)
class MESConfig:
    units: Mapping[str, float]
    exponents: Mapping[str, float]
    score: float = 100.0


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Proxy score (top-1 %, validation loss, their bootstrap noise) and deployed costs."""

    top1: float
    latency_ms: float
    params: int
    macs: int
    mes: float
    loss: float = float("nan")
    top1_std: float = 0.0
    loss_std: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PARETO_DIRECTIONS = ["maximize", "minimize", "minimize"]  # top1, latency_ms, params_m
PARETO_METRICS = ["top1", "latency_ms", "params_m"]


def pareto_values(m: Metrics) -> list[float]:
    """A candidate's objective values in a Pareto study: top-1 (max), latency ms and M params (min)."""
    return [m.top1, m.latency_ms, m.params / 1e6]


def deploy_costs(arch: ArchConfig, lut: LatencyLUT, mes_cfg: MESConfig) -> tuple[float, int, int, float]:
    """(latency ms, params, MACs, MES) of ``arch`` in the LUT's deployment context."""
    deployed = lut.in_context(arch)
    lat = lut.predict(deployed)
    params = count_params(deployed)
    return lat, params, count_macs(deployed), mes(lat, params, mes_cfg.units, mes_cfg.exponents, mes_cfg.score)


def resolve_mes(cfg: Mapping[str, Any], lut: LatencyLUT) -> MESConfig:
    """MES settings from config; a unit given as a preset name (e.g. ``latency_ms: s0``) is that
    preset's LUT latency / parameters in the LUT's deployment context."""
    units = {}
    for key, unit in dict(cfg["units"]).items():
        if isinstance(unit, str):
            try:
                preset = lut.in_context(ArchConfig.preset(unit))
            except Exception:
                raise UserError(f"mes.units.{key}: {unit!r} is neither a number nor a preset name") from None
            if key == "latency_ms" and lut.missing(preset):
                raise UserError(f"mes.units.{key}: the LUT (space {lut.meta['space_name']}) cannot time preset "
                                f"{unit!r}; give the unit in milliseconds, e.g. mes.units.{key}=10")
            unit = lut.predict(preset) if key == "latency_ms" else count_params(preset) / 1e6
        units[key] = float(unit)
    return MESConfig(units, {k: float(v) for k, v in dict(cfg["exponents"]).items()}, float(cfg.get("score", 100.0)))


class CandidateEvaluator:
    """Proxy accuracy (supernet context) + deployed costs (LUT context) of one architecture."""

    def __init__(self, proxy: AccuracyProxy, lut: LatencyLUT, mes_cfg: MESConfig) -> None:
        self.proxy, self.lut, self.mes_cfg = proxy, lut, mes_cfg

    def costs(self, arch: ArchConfig) -> tuple[float, int, int, float]:
        return deploy_costs(arch, self.lut, self.mes_cfg)

    def __call__(self, arch: ArchConfig) -> Metrics:
        lat, params, macs, score = self.costs(arch)
        p = self.proxy(arch)
        return Metrics(float(p["top1"]), lat, params, macs, score, float(p.get("loss", float("nan"))),
                       float(p.get("top1_std", 0.0)), float(p.get("loss_std", 0.0)))


def trial_attrs(arch: ArchConfig, m: Metrics, **extra: Any) -> dict[str, Any]:
    """User attributes every recorded candidate carries (the export and the reports read them)."""
    return {"arch": arch.to_dict(), "arch_hash": arch_hash(arch), "summary": arch.summary(), **m.as_dict(), **extra}
