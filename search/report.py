"""Released presets vs the members a search derived for their budgets: costs, LUT and measured
latency, proxy accuracy (the final table of eformer-pipeline and of experiments/derive_s0_l.py)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from latency_lut.backends import make_backend
from latency_lut.lut import LatencyLUT
from latency_lut.timing import Protocol
from latency_lut.validate import measure_networks
from search.results import arch_of, completed, load_study
from supernet.arch import BLOCK_OPTIONS, ArchConfig
from supernet.signatures import count_macs, count_params


def deployed_row(arch: ArchConfig, lut: LatencyLUT) -> dict[str, Any]:
    return {"summary": arch.summary(), "widths": list(arch.widths), "depths": list(arch.depths),
            "attn": [s.num_attn for s in arch.stages], "expansions": ["".join(map(str, e)) for e in arch.expansions],
            **option_values(arch), "params": count_params(arch), "macs": count_macs(arch), "lut_ms": lut.predict(arch)}


def option_values(arch: ArchConfig) -> dict[str, Any]:
    """Each block option's values per stage (``"8.4"``: its blocks', ``-``: none there), and ``searched``: the
    options some block holds at other than the default."""
    rows = {name: [".".join(map(str, row)) or "-" for row in arch.option_rows(name)] for name in BLOCK_OPTIONS}
    return {"searched": arch.searched_options(), **rows}


def _score(attrs: dict[str, Any]) -> dict[str, Any]:
    """The proxy score of a trial or preset record: top-1, val loss and their bootstrap noise."""
    return {k: attrs.get(k) for k in ("top1", "top1_std", "loss", "loss_std")}


def released_vs_derived(runs: dict[str, dict[str, Any]], lut_path: str | Path, protocol: Protocol,
                        progress: bool = True) -> list[dict[str, Any]]:
    """One row per budget (a preset name keyed to its slimming run record): the released preset and
    the run's best member, both in the LUT's deployment context, measured end to end, interleaved."""
    lut = LatencyLUT.load(lut_path)
    rows, nets = [], {}
    for b, run in runs.items():
        best = next(t for t in completed(load_study(run)) if t.number == run["best_trial"])
        derived = lut.in_context(arch_of(best))
        released = lut.in_context(ArchConfig.preset(b))
        nets[f"released-{b}"], nets[f"derived-{b}"] = released, derived
        row = {"budget": b, "budget_latency_ms": run["budget"]["latency_ms"], "budget_params": run["budget"]["params"],
               "released": {**deployed_row(released, lut), **_score(run["presets"][b])},
               "derived": {**deployed_row(derived, lut), **_score(best.user_attrs), "trial": best.number,
                           "steps": len(run["path"]) - 1}}
        d, rel = row["derived"], row["released"]
        row["meets_budget"] = d["lut_ms"] <= row["budget_latency_ms"] + 1e-9 and d["params"] <= row["budget_params"]
        row["dominates_released"] = d["top1"] >= rel["top1"] and d["lut_ms"] <= rel["lut_ms"]
        rows.append(row)
    device = dict(lut.meta["device"], name=lut.meta["device_name"])
    stats = measure_networks(nets, make_backend(device), protocol, progress=progress)[0]
    for r in rows:
        for kind in ("released", "derived"):
            s = stats[f"{kind}-{r['budget']}"]
            r[kind]["measured_ms"], r[kind]["measured_iqr_ms"] = s.value(lut.statistic), s.iqr_ms
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A markdown table, released above derived for each budget (a column per block option that a member searched)."""
    shown = [n for n in BLOCK_OPTIONS if any(n in r[k].get("searched", ()) for r in rows for k in ("released", "derived"))]
    head = "| budget | model | widths | depths (attn) | expansions | " + "".join(f"{n} of {BLOCK_OPTIONS[n].holders} | "
                                                                           for n in shown)
    lines = [head + "params (M) | GMACs | LUT (ms) | measured (ms) | proxy top-1 (%) | proxy val loss |",
             "|---" * (11 + len(shown)) + "|"]
    for r in rows:
        for kind in ("released", "derived"):
            d = r[kind]
            depths = " ".join(f"{n}({a})" for n, a in zip(d["depths"], d["attn"]))
            label = f"derived ({d['steps']} steps)" if kind == "derived" else kind
            options = "".join(f"{' '.join(d[n])} | " for n in shown)
            lines.append(f"| {r['budget'].upper()} | {label} | {'-'.join(map(str, d['widths']))} | {depths} | "
                         f"{' '.join(d['expansions'])} | {options}{d['params'] / 1e6:.3f} | {d['macs'] / 1e9:.3f} | "
                         f"{d['lut_ms']:.2f} | {d['measured_ms']:.2f} | {_pm(d.get('top1'), d.get('top1_std'), 2)} | "
                         f"{_pm(d.get('loss'), d.get('loss_std'), 4)} |")
    return "\n".join(lines)


def _pm(value: Any, std: Any, digits: int) -> str:
    """``value ± std`` (the bootstrap noise of a proxy score); '-' where a record has no value."""
    if value is None:
        return "-"
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"


def proxy_noise_lines(rows: list[dict[str, Any]]) -> list[str]:
    """What a final table's proxy differences can and cannot say: each derived-vs-released val-loss difference
    against the two scores' bootstrap noise, then the limit that no proxy difference is an accuracy difference."""
    lines = []
    for r in rows:
        d, rel = r["derived"], r["released"]
        if d.get("loss") is None or rel.get("loss") is None:
            continue
        diff = d["loss"] - rel["loss"]
        noise = math.hypot(d.get("loss_std") or 0.0, rel.get("loss_std") or 0.0)
        verdict = "beyond" if abs(diff) > 2 * noise else "within"
        lines.append(f"{r['budget'].upper()}: derived - released proxy val loss {diff:+.4f} (2 x noise {2 * noise:.4f}): "
                     f"{verdict} the proxy's own noise")
    lines.append("These are supernet scores, not accuracies: on the embedded task the proxy ranks members about as "
                 "well as one standalone seed ranks another, and standalone top-1 differences between members lie "
                 "within seed noise, so this table claims no accuracy difference (README: How far the proxy can be "
                 "trusted).")
    return lines
