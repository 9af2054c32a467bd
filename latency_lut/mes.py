"""Mobile Efficiency Score (EfficientFormerV2, Sec. 4): MES = Score * prod_i (M_i / U_i) ** (-alpha_i).

Metrics, their units U_i and exponents alpha_i come from config (conf/search/*.yaml ``mes``). The
paper uses MobileNetV2's size and speed as units; this project ships no MobileNetV2, so the default
latency unit is the LUT latency of S0 on the same device (the paper reports S0 at MobileNetV2 speed)
and the size unit is MobileNetV2's 3.5 M parameters.
"""
from __future__ import annotations

from typing import Mapping

DEFAULT_UNITS = {"latency_ms": 1.0, "params_m": 3.5}
DEFAULT_EXPONENTS = {"latency_ms": 0.5, "params_m": 0.5}


def mes_score(metrics: Mapping[str, float], units: Mapping[str, float], exponents: Mapping[str, float],
              score: float = 100.0) -> float:
    """MES of named metrics (each needs a positive value, unit and exponent)."""
    out = float(score)
    for name, value in metrics.items():
        if name not in units or name not in exponents:
            raise KeyError(f"mes: no unit/exponent configured for metric {name!r}")
        if value <= 0 or units[name] <= 0:
            raise ValueError(f"mes: {name} value {value} and unit {units[name]} must be positive")
        out *= (value / units[name]) ** (-exponents[name])
    return out


def mes(latency_ms: float, params: float, units: Mapping[str, float] = DEFAULT_UNITS,
        exponents: Mapping[str, float] = DEFAULT_EXPONENTS, score: float = 100.0) -> float:
    """MES of a model with ``latency_ms`` and ``params`` parameters (converted to millions)."""
    return mes_score({"latency_ms": latency_ms, "params_m": params / 1e6}, units, exponents, score)
