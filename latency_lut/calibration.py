"""Calibrations from the LUT's piece sums to measured whole-network latency, fitted by ``eformer-lut validate``.

* ``sum``: the plain block sum (no fit; kept for comparison).
* ``global``: ``measured = a * sum + b`` (one scale for every piece).
* ``per_kind``: ``measured = sum_k a_k * sum_k + b`` over piece kinds (stem, ffn, attn, embed, attn_down, head):
  pieces timed alone misjudge kinds differently (a memory-bound depthwise FFN and an attention block lose or
  gain differently from the caches and fused neighbours they have inside a network). The factors are ridge-
  shrunk toward the global ``a`` with the strength chosen by leave-one-out error on the fit members, so with
  few members it falls back to the global fit instead of over-fitting.

``choose`` picks the per-kind model only when its leave-one-out error on the fit members is at least 2 % (relative)
below the global fit's; held-out members are never used for the choice.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

RIDGE_GRID = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4)
MODELS = ("sum", "global", "per_kind")


def fit_global(sums: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    a, b = np.polyfit(sums, measured, 1)
    return {"model": "global", "a": float(a), "b": float(b)}


def _kind_matrix(kind_sums: Sequence[dict[str, float]], kinds: Sequence[str]) -> np.ndarray:
    return np.array([[ks.get(k, 0.0) for k in kinds] for ks in kind_sums])


def _ridge(x: np.ndarray, y: np.ndarray, prior: float, lam: float) -> tuple[np.ndarray, float]:
    """min ||x w + b - y||^2 + lam * ||(w - prior) * scale||^2 (b unpenalised; columns scaled to unit mean)."""
    scale = np.maximum(x.mean(axis=0), 1e-9)
    xs = x / scale
    n, k = xs.shape
    design = np.hstack([xs, np.ones((n, 1))])
    penalty = np.diag([lam] * k + [0.0])
    target_prior = np.concatenate([prior * scale, [0.0]])  # w_scaled = w * scale
    lhs = design.T @ design + penalty
    rhs = design.T @ y + penalty @ target_prior
    sol = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    return sol[:k] / scale, float(sol[k])


def fit_per_kind(kind_sums: Sequence[dict[str, float]], measured: np.ndarray, prior_a: float) -> dict[str, Any]:
    kinds = sorted({k for ks in kind_sums for k in ks})
    x = _kind_matrix(kind_sums, kinds)
    best = None
    for lam in RIDGE_GRID:
        errors = []
        for i in range(len(measured)):
            keep = np.arange(len(measured)) != i
            w, b = _ridge(x[keep], measured[keep], prior_a, lam)
            errors.append(abs(float(x[i] @ w + b) - measured[i]) / measured[i])
        loo = float(np.mean(errors))
        if best is None or loo < best[0]:
            best = (loo, lam)
    assert best is not None
    w, b = _ridge(x, measured, prior_a, best[1])
    return {"model": "per_kind", "a": float(prior_a), "b": b, "kinds": {k: float(v) for k, v in zip(kinds, w)},
            "ridge": best[1], "loo_mape_pct": 100 * best[0]}


def predict(cal: dict[str, Any], sums: np.ndarray, kind_sums: Sequence[dict[str, float]]) -> np.ndarray:
    if cal["model"] == "sum":
        return np.asarray(sums, dtype=float)
    if cal["model"] == "global":
        return cal["a"] * np.asarray(sums) + cal["b"]
    return np.array([sum(cal["kinds"].get(k, cal["a"]) * v for k, v in ks.items()) + cal["b"] for ks in kind_sums])


def loo_mape_global(sums: np.ndarray, measured: np.ndarray) -> float:
    errors = []
    for i in range(len(measured)):
        keep = np.arange(len(measured)) != i
        cal = fit_global(sums[keep], measured[keep])
        errors.append(abs(cal["a"] * sums[i] + cal["b"] - measured[i]) / measured[i])
    return 100 * float(np.mean(errors))


def choose(sums: np.ndarray, kind_sums: Sequence[dict[str, float]], measured: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the chosen calibration, every candidate) fitted on the fit members; the choice is by leave-one-out MAPE."""
    glob = fit_global(sums, measured)
    glob["loo_mape_pct"] = loo_mape_global(sums, measured)
    per_kind = fit_per_kind(kind_sums, measured, glob["a"])
    candidates = {"sum": {"model": "sum", "a": 1.0, "b": 0.0}, "global": glob, "per_kind": per_kind}
    # the per-kind model must earn its extra factors: at least 2% (relative) lower leave-one-out error
    chosen = per_kind if per_kind["loo_mape_pct"] < 0.98 * glob["loo_mape_pct"] else glob
    return chosen, candidates
