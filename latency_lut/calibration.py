"""Calibrations from the LUT's pieces to measured whole-network latency, fitted by ``eformer-lut validate``.

A network's features are read off the LUT (:meth:`latency_lut.lut.LatencyLUT.features`): ``sum`` (all its
pieces' latencies), ``sum:<kind>`` (per piece kind: stem, ffn, attn, embed, attn_down, head) and ``pieces``
(how many pieces it has). A calibration is a linear model over some of them, ``measured = sum_f w_f * f + b``:

* ``sum``: the plain block sum (``w_sum = 1``, no fit; kept for comparison).
* ``global``: ``a * sum + b`` (one scale for every piece).
* ``per_kind``: ``sum_k a_k * sum:k + c * pieces + b``. Pieces timed alone misjudge kinds differently (a
  memory-bound depthwise FFN and an attention block gain differently from the caches and fused neighbours
  they have inside a network), and every piece timed alone pays the runtime's fixed per-call cost (session
  entry, input and output hand-over, layout reorders at its borders) that a network pays once: ``c`` is
  that cost, negative. The factors are ridge-shrunk toward the global fit (``a_k -> a``, ``c -> 0``) with
  the strength chosen by leave-one-out error, so with few members it falls back to the global fit.

Fits minimise the *relative* squared error (the figures reported are relative). :func:`choose` keeps the
per-kind model only when its leave-one-out error on the fit members is at least 2 % (relative) below the
global fit's; held-out members are never used for the choice.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from supernet.signatures import KINDS

RIDGE_GRID = (0.0, 1e-3, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
MODELS = ("sum", "global", "per_kind")
KIND_PREFIX = "sum:"


def _solve(x: np.ndarray, y: np.ndarray, prior: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """min sum(((x w + b - y) / y)^2) + lam * ||(w - prior) * scale||^2 (b unpenalised; each column's scale is
    its mean absolute value, so one ``lam`` means the same for latencies and counts)."""
    scale = np.maximum(np.abs(x).mean(axis=0), 1e-9)
    xs = x / scale
    n, k = xs.shape
    wt = 1.0 / y
    design = np.hstack([xs, np.ones((n, 1))]) * wt[:, None]
    target = y * wt
    penalty = np.diag([lam] * k + [0.0])
    prior_s = np.concatenate([prior * scale, [0.0]])
    sol = np.linalg.lstsq(design.T @ design + penalty, design.T @ target + penalty @ prior_s, rcond=None)[0]
    return sol[:k] / scale, float(sol[k])


def _matrix(features: Sequence[Mapping[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.array([[f.get(n, 0.0) for n in names] for f in features], dtype=float)


def weighted(weights: Mapping[str, float], b: float, features: Mapping[str, float]) -> float:
    """One network's predicted latency (ms): its weighted features plus the offset ``b``."""
    return sum(w * features.get(k, 0.0) for k, w in weights.items()) + b


def predict(cal: Mapping[str, Any], features: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Predicted latencies (ms) of networks given their features."""
    return np.array([weighted(cal["weights"], cal["b"], f) for f in features])


def _loo(fit: Any, features: Sequence[Mapping[str, float]], measured: np.ndarray) -> float:
    """Leave-one-out mean relative error (%) of the fitting procedure ``fit(features, measured) -> cal``."""
    errors = []
    for i in range(len(measured)):
        keep = [j for j in range(len(measured)) if j != i]
        cal = fit([features[j] for j in keep], measured[keep])
        errors.append(abs(float(predict(cal, [features[i]])[0]) - measured[i]) / measured[i])
    return 100 * float(np.mean(errors))


def fit_global(features: Sequence[Mapping[str, float]], measured: np.ndarray) -> dict[str, Any]:
    """``a * sum + b``."""
    w, b = _solve(_matrix(features, ["sum"]), measured, np.zeros(1), 0.0)
    return {"model": "global", "a": float(w[0]), "b": b, "weights": {"sum": float(w[0])}}


def _per_kind_names(features: Sequence[Mapping[str, float]]) -> list[str]:
    return sorted({k for f in features for k in f if k.startswith(KIND_PREFIX)}) + ["pieces"]


def _fit_per_kind_at(features: Sequence[Mapping[str, float]], measured: np.ndarray, lam: float) -> dict[str, Any]:
    names = _per_kind_names(features)
    a = fit_global(features, measured)["a"]
    prior = np.array([0.0 if n == "pieces" else a for n in names])
    w, b = _solve(_matrix(features, names), measured, prior, lam)
    return {"model": "per_kind", "a": a, "b": b, "weights": {n: float(v) for n, v in zip(names, w)}, "ridge": lam}


def fit_per_kind(features: Sequence[Mapping[str, float]], measured: np.ndarray) -> dict[str, Any]:
    """``sum_k a_k * sum:k + c * pieces + b``, ridge strength chosen by leave-one-out error."""
    best = min(RIDGE_GRID, key=lambda lam: _loo(lambda f, y: _fit_per_kind_at(f, y, lam), features, measured))
    cal = _fit_per_kind_at(features, measured, best)
    cal["loo_mape_pct"] = _loo(lambda f, y: _fit_per_kind_at(f, y, best), features, measured)
    return cal


def choose(features: Sequence[Mapping[str, float]], measured: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the chosen calibration, every candidate) fitted on the fit members; the choice is by leave-one-out MAPE."""
    glob = fit_global(features, measured)
    glob["loo_mape_pct"] = _loo(fit_global, features, measured)
    per_kind = fit_per_kind(features, measured)
    candidates = {"sum": {"model": "sum", "a": 1.0, "b": 0.0, "weights": {"sum": 1.0}}, "global": glob, "per_kind": per_kind}
    # the per-kind model must earn its extra factors: at least 2% (relative) lower leave-one-out error
    chosen = per_kind if per_kind["loo_mape_pct"] < 0.98 * glob["loo_mape_pct"] else glob
    return chosen, candidates


def from_stored(cal: Mapping[str, Any]) -> dict[str, Any]:
    """A stored calibration in the current form (``weights``); files written before it carry ``a`` and
    ``b`` and, for the per-kind model, ``kinds`` (factor per kind, the global ``a`` for kinds not listed)."""
    out = dict(cal)
    if "weights" not in out:
        kinds = out.get("kinds")
        if kinds:
            out["weights"] = {f"{KIND_PREFIX}{k}": float(kinds.get(k, out["a"])) for k in KINDS}
        else:
            out["weights"] = {"sum": float(out["a"])}
    return out
