"""Search budgets: latency and/or size limits, given as numbers or as a released model's costs."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional

from supernet.arch import PRESETS, ArchConfig
from supernet.errors import UserError
from supernet.signatures import count_params
from supernet.space import SearchSpace

if TYPE_CHECKING:  # the LUT (pandas, torch) is not loaded for the config resolver budget_name
    from latency_lut.lut import LatencyLUT


@dataclasses.dataclass(frozen=True)
class Budget:
    """``latency_ms`` and/or ``params`` upper bounds (None = unconstrained); ``name`` labels studies."""

    name: str
    latency_ms: Optional[float] = None
    params: Optional[int] = None

    def violations(self, latency_ms: float, params: int) -> dict[str, float]:
        """Relative constraint values (value / limit - 1; <= 0 feasible, Optuna's convention). Relative, so
        that samplers summing violations weigh a 10% latency excess like a 10% size excess."""
        out = {}
        if self.latency_ms is not None:
            out["latency"] = latency_ms / self.latency_ms - 1.0
        if self.params is not None:
            out["params"] = params / self.params - 1.0
        return out

    def met(self, latency_ms: float, params: int) -> bool:
        return all(v <= 0 for v in self.violations(latency_ms, params).values())

    def describe(self) -> str:
        parts = []
        if self.latency_ms is not None:
            parts.append(f"latency <= {self.latency_ms:.2f} ms")
        if self.params is not None:
            parts.append(f"params <= {self.params / 1e6:.3f} M")
        return f"{self.name}: " + (" and ".join(parts) if parts else "unconstrained")


def _split(spec: Any) -> tuple[Optional[str], Optional[float], Optional[float]]:
    """(preset, latency_ms, params_m) of a ``budget`` value (a preset name or a mapping)."""
    if spec is None or spec == "none":
        return None, None, None
    if isinstance(spec, str):
        return spec.lower(), None, None
    if isinstance(spec, Mapping):
        extra = set(spec) - {"preset", "latency_ms", "params_m"}
        if extra:
            raise UserError(f"budget: unknown key(s) {', '.join(sorted(map(str, extra)))}; "
                            "allowed: preset, latency_ms, params_m")
        for key in ("latency_ms", "params_m"):
            val = spec.get(key)
            if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0):
                raise UserError(f"budget.{key}: {val!r} must be a positive number")
        preset = spec.get("preset")
        return (str(preset).lower() if preset else None), spec.get("latency_ms"), spec.get("params_m")
    raise UserError(f"budget: {spec!r} is not a preset name or a mapping")


def budget_name(spec: Any) -> str:
    """A short label for run directories and study names: ``s0``, ``12ms-3M``, ``s0-12ms``."""
    preset, lat, pm = _split(spec)
    parts = ([preset] if preset else []) + ([f"{lat:g}ms"] if lat is not None else []) + ([f"{pm:g}M"] if pm is not None else [])
    return "-".join(parts) or "none"


def resolve_budget(spec: Any, lut: LatencyLUT, space: SearchSpace) -> Budget:
    """A budget from ``budget``: a preset name (latency <= its LUT latency and params <= its
    parameters, on this LUT's device and deployment context), or a mapping with ``preset``,
    ``latency_ms`` and/or ``params_m`` where explicit numbers replace the preset's limit."""
    preset, lat, pm = _split(spec)
    lat_limit = float(lat) if lat is not None else None
    params_limit = int(round(pm * 1e6)) if pm is not None else None
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"budget: {preset!r} is not a preset ({', '.join(PRESETS)}); give a preset "
                            "or budget.latency_ms / budget.params_m")
        arch = lut.in_context(ArchConfig.preset(preset))
        if lut.missing(arch):
            raise UserError(f"budget: preset {preset!r} cannot be timed with this LUT (space "
                            f"{lut.meta['space_name']}); give budget.latency_ms / budget.params_m")
        lat_limit = lut.predict(arch) if lat is None else lat_limit
        params_limit = count_params(arch) if pm is None else params_limit
    budget = Budget(budget_name(spec), lat_limit, params_limit)
    smallest = lut.in_context(space.smallest())
    lat_min, params_min = lut.predict(smallest), count_params(smallest)
    if budget.latency_ms is not None and budget.latency_ms < lat_min:
        raise UserError(f"budget: latency {budget.latency_ms:.2f} ms is below the smallest member's "
                        f"{lat_min:.2f} ms on this LUT")
    if budget.params is not None and budget.params < params_min:
        raise UserError(f"budget: {budget.params / 1e6:.3f} M parameters is below the smallest member's "
                        f"{params_min / 1e6:.3f} M")
    return budget
