"""``eformer-export arch``: turn searched trials into things people train and deploy.

For each chosen trial (``--best`` also links them as ``best.yaml``, ``best.pt``, ``best.onnx``): ``<name>.yaml``
(a supernet/presets-style ArchConfig in the LUT's deployment
context, so build_model gives the recorded parameters and the LUT the recorded latency),
``<name>.pt`` (the member's weights extracted from the supernet, with its architecture in the
supernet's context) and ``<name>.onnx`` (those weights, deploy form, checked under onnxruntime).
Plus ``trials.csv`` (every trial), ``pareto.png`` (proxy top-1 vs LUT latency, presets marked),
``slimming_path.png`` (slimming runs) and ``export.json`` (what was written).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from search.results import arch_of, completed, load_study, pareto, trials_frame
from search.run_record import read_run
from search.strategies import get_strategy
from supernet.elastic import Supernet
from supernet.errors import UserError
from supernet.io_utils import atomic_torch_save, atomic_write, atomic_write_text, check_output_dir, make_dir
from supernet.onnx_export import check_onnx_parity, export_onnx
from supernet.plotting import pyplot


def choose_trials(study, run: dict[str, Any], which: str | int) -> list:
    """``which``: ``"best"``, ``"pareto"`` or a trial number."""
    trials = completed(study)
    if not isinstance(which, str):
        found = [t for t in trials if t.number == which]
        if not found:
            raise UserError(f"--trial: {which} is not a completed trial of study {run['study_name']!r} "
                            f"(completed: {len(trials)})")
        return found
    if which == "pareto":
        return pareto(trials)
    best = get_strategy(run["strategy"]).best_trial(study)
    if best is None:
        raise UserError(f"--best: study {run['study_name']!r} has no feasible completed trial")
    return [best]


def plot_pareto(trials: list, front: list, run: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lat = [t.user_attrs["latency_ms"] for t in trials]
    acc = [t.user_attrs["top1"] for t in trials]
    ax.scatter(lat, acc, s=8, c="0.7", label=f"trials ({len(trials)})")
    ax.plot([t.user_attrs["latency_ms"] for t in front], [t.user_attrs["top1"] for t in front], "o-", c="C0",
            ms=4, label="Pareto front (feasible)")
    for name, p in (run.get("presets") or {}).items():
        ax.scatter([p["latency_ms"]], [p["top1"]], marker="*", s=120, c="C3", zorder=5)
        ax.annotate(name.upper(), (p["latency_ms"], p["top1"]), textcoords="offset points", xytext=(4, 4), color="C3")
    b = run["budget"]
    if b.get("latency_ms"):
        ax.axvline(b["latency_ms"], ls="--", c="C2", lw=1, label=f"budget {b['name']}")
    ax.set_xlabel(f"LUT latency (ms, {Path(run['lut']).stem})")
    ax.set_ylabel("proxy top-1 (%, supernet member)")
    ax.set_title(f"{run['strategy']} - {run['study_name']}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_path(steps: list, run: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    x = [t.user_attrs["step"] for t in steps]
    a1.plot(x, [t.user_attrs["latency_ms"] for t in steps], "o-", ms=3, label="LUT latency (ms)")
    a1.plot(x, [t.user_attrs["params"] / 1e6 for t in steps], "s-", ms=3, label="params (M)")
    if run["budget"].get("latency_ms"):
        a1.axhline(run["budget"]["latency_ms"], ls="--", c="C2", lw=1, label="latency budget")
    a1.set_xlabel("slimming step")
    a1.legend(fontsize=8)
    a2.plot(x, [t.user_attrs["top1"] for t in steps], "o-", ms=3, c="C3")
    a2.set_xlabel("slimming step")
    a2.set_ylabel("proxy top-1 (%)")
    fig.suptitle(f"slimming path to {run['budget']['name']}")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def export_trial(trial, run: dict[str, Any], supernet: Supernet, out: Path, onnx: bool,
                 exporter: str = "auto") -> dict[str, Any]:
    """Write the YAML, weights and ONNX (``exporter``: see :data:`conf.schemas.EXPORTERS`) of one trial;
    returns the manifest entry."""
    name = f"{run['strategy']}-{run['budget']['name']}-t{trial.number}"
    deployed = arch_of(trial).replace(name=name, **run["deploy_context"])
    entry: dict[str, Any] = {"trial": trial.number, "name": name,
                             **{k: trial.user_attrs.get(k) for k in ("summary", "top1", "latency_ms", "params", "macs", "mes")}}
    atomic_write_text(out / f"{name}.yaml", deployed.to_yaml())
    entry["yaml"] = str(out / f"{name}.yaml")
    member = supernet.member(deployed)
    model = supernet.extract(member).eval()
    atomic_torch_save({"model": model.state_dict(), "arch": member.to_dict()}, out / f"{name}.pt")
    entry["weights"] = str(out / f"{name}.pt")
    if onnx:
        size = member.image_size
        diffs: list[float] = []
        export_onnx(model, out / f"{name}.onnx", (1, 3, size, size), exporter=exporter,
                    check=lambda tmp: diffs.append(check_onnx_parity(model, tmp, name=out / f"{name}.onnx")))
        entry["onnx"] = str(out / f"{name}.onnx")
        entry["onnx_max_abs_diff"] = diffs[0]
    return entry


def link_best(entry: dict[str, Any], target: Path) -> None:
    """``best.yaml`` / ``best.pt`` / ``best.onnx``: relative links to the best member's files, so scripts (and the
    README's commands) need not know its trial number. A link is replaced atomically."""
    for key, suffix in (("yaml", ".yaml"), ("weights", ".pt"), ("onnx", ".onnx")):
        if key not in entry:
            continue
        link, tmp = target / f"best{suffix}", target / f".best{suffix}.{os.getpid()}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(Path(entry[key]).name, tmp)
        os.replace(tmp, link)
        entry[f"best_{key}"] = str(link)


def export_arch(run_dir: str | Path, which: str | int = "best", out: str | Path | None = None, onnx: bool = True,
                verbose: bool = True, exporter: str = "auto") -> dict[str, Any]:
    """Export the chosen trials of an eformer-search run (``which``: ``"best"``, ``"pareto"`` or a trial
    number) to ``out`` (default ``<run_dir>/export``): YAML, weights, ONNX, trials.csv, plots and export.json.
    Returns the manifest (export.json's content)."""
    run = read_run(run_dir)
    study = load_study(run)
    chosen = choose_trials(study, run, which)
    target = check_output_dir(Path(out) if out else Path(run_dir) / "export")
    make_dir(target, "--out")
    supernet = Supernet.load(run["supernet"])
    entries = [export_trial(t, run, supernet, target, onnx, exporter) for t in chosen]
    if which == "best":
        link_best(entries[0], target)
    frame = trials_frame(study)
    atomic_write(target / "trials.csv", lambda tmp: frame.to_csv(tmp, index=False))
    trials = completed(study)
    plots = {"pareto": str(target / "pareto.png")}
    plot_pareto(trials, pareto(trials), run, target / "pareto.png")
    steps = get_strategy(run["strategy"]).path_trials(study)
    if steps is not None:
        plot_path(steps, run, target / f"{run['strategy']}_path.png")
        plots[f"{run['strategy']}_path"] = str(target / f"{run['strategy']}_path.png")
    manifest = {"run": str(Path(run_dir).resolve()), "study": run["study_name"], "exported": entries,
                "trials_csv": str(target / "trials.csv"), "plots": plots}
    atomic_write_text(target / "export.json", json.dumps(manifest, indent=1))
    if verbose:
        for e in entries:
            print(f"trial {e['trial']}: {e['summary']}  top1 {e['top1']:.2f}%  LUT {e['latency_ms']:.2f} ms  "
                  f"{e['params'] / 1e6:.3f} M -> {e['yaml']}, {e['weights']}" + (f", {e['onnx']}" if "onnx" in e else ""))
        print(f"trials: {target / 'trials.csv'} ({len(frame)} rows); plots: {', '.join(plots.values())}")
    return manifest
