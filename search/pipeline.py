"""``eformer-pipeline``: the main job end to end on this machine and the embedded Fashion-MNIST subset.

    eformer-pipeline                         # LUT -> supernet -> slimming to S0/S1/S2/L + NSGA-II -> export -> table
    eformer-pipeline work_dir=runs/mine budgets=[s0,l] nsga2_overrides=[search.n_trials=100]

Each stage is one of the stand-alone apps (eformer-lut, eformer-train, eformer-search,
eformer-export) composed with the overrides in conf/eformer_pipeline.yaml, and each reuses what an
earlier run finished: the LUT and the training resume from their files, a search whose run record
matches its config is skipped, slimming and NSGA-II continue their studies, exports and the final
measurements are redone only when missing. A killed run resumes where it stopped.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from conf import compose
from conf.schemas import CONF_DIR, LutApp, PipelineApp, SearchApp, TrainApp, check_config, register_schemas
from latency_lut.app import run_lut
from search.app import run_search
from search.run_record import RUN_FILE, read_run
from supernet.errors import UserError, composition_error, report_user_errors, run_hydra_app
from supernet.io_utils import atomic_write_text, make_dir
from supernet.train.app import run_training

register_schemas()


class StageClock:
    """Wall time of each stage since the previous lap, printed as a table with shares at the end."""

    def __init__(self) -> None:
        self.last = time.time()
        self.laps: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.time()
        self.laps.append((name, now - self.last))
        self.last = now

    def table(self) -> str:
        total = sum(t for _, t in self.laps) or 1.0
        rows = ["| stage | seconds | share |", "|---|---|---|"]
        rows += [f"| {name} | {t:.0f} | {100 * t / total:.0f} % |" for name, t in self.laps]
        return "\n".join(rows + [f"| all | {total:.0f} | 100 % |"])


def banner(i: int, n: int, text: str) -> None:
    print(f"\n=== [{i}/{n}] {text}", flush=True)


def lut_stage(cfg: DictConfig) -> Path:
    from latency_lut.lut import LatencyLUT

    over = [f"space={cfg.search_space}", *cfg.lut_overrides]
    lut_cfg = compose("eformer_lut", ["command=build", *over])
    out = Path(lut_cfg.out)
    meta = LatencyLUT.load(out).meta if out.is_file() else {}
    if meta.get("complete") and meta.get("calibration"):
        print(f"reusing {out} (complete and calibrated)")
        return out
    run_lut(lut_cfg)
    if not LatencyLUT.load(out).meta.get("calibration"):
        run_lut(compose("eformer_lut", ["command=validate", *over]))
    return out


def search_inputs(cfg: DictConfig, supernet: str | Path, lut: str | Path, cache: str | Path) -> list[str]:
    """What every search stage of the main job is given: the supernet, the LUT, the shared proxy cache, the device."""
    return [f"supernet={supernet}", f"lut_file={lut}", f"proxy.cache={cache}", f"compute_device={cfg.compute_device}"]


def slimming_stage_overrides(cfg: DictConfig, budget: str, run_dir: str | Path, inputs: list[str]) -> list[str]:
    """The eformer-search overrides of the main job's slimming to ``budget`` (its ``slimming_overrides`` last)."""
    return ["search=slimming", f"budget={budget}", f"run_dir={run_dir}", *inputs, *cfg.slimming_overrides]


def search_stage(overrides: list[str]) -> dict[str, Any]:
    cfg = compose("eformer_search", overrides)
    run_file = Path(cfg.run_dir) / RUN_FILE
    if run_file.is_file():
        run = read_run(cfg.run_dir)
        if run.get("config") == OmegaConf.to_container(cfg, resolve=True):
            print(f"reusing {cfg.run_dir} ({run['strategy']}, {run['trials']} trials)")
            return run
    return run_search(cfg)


def export_stage(run_dir: str, which: str, onnx: bool = True, exporter: str = "fast") -> dict[str, Any]:
    from search.export_arch import export_arch
    manifest = Path(run_dir) / "export" / "export.json"
    if manifest.is_file() and manifest.stat().st_mtime >= (Path(run_dir) / RUN_FILE).stat().st_mtime:
        return json.loads(manifest.read_text())
    return export_arch(run_dir, which, onnx=onnx, exporter=exporter)


STAGE_APPS = {"lut_overrides": ("eformer_lut", LutApp), "train_overrides": ("eformer_train", TrainApp),
              "slimming_overrides": ("eformer_search", SearchApp), "nsga2_overrides": ("eformer_search", SearchApp)}


def check_stage_overrides(cfg: DictConfig) -> None:
    """Compose and check every stage's config before the first stage runs: a typo or an out-of-range value
    in ``slimming_overrides`` fails now, not after the LUT and the training (one line naming the list)."""
    spaces = sorted(p.stem for p in (CONF_DIR / "space").glob("*.yaml"))
    if cfg.search_space not in spaces:
        raise UserError(f"search_space: {cfg.search_space!r} is not one of the spaces in conf/space ({', '.join(spaces)})")
    fixed = {"lut_overrides": ["command=build", f"space={cfg.search_space}"], "train_overrides": [f"space={cfg.search_space}"],
             "slimming_overrides": ["search=slimming"], "nsga2_overrides": ["search=nsga2"]}
    for key, (app, schema) in STAGE_APPS.items():
        overrides = [*fixed[key], *cfg[key]]
        try:
            check_config(compose(app, overrides), app=schema)
        except UserError as exc:
            raise UserError(f"{key}: {exc}") from None
        except (HydraException, OmegaConfBaseException) as exc:  # Hydra's composition errors (unknown key, wrong type, ...)
            raise UserError(f"{key}: {composition_error(exc)}") from None


def run_pipeline(cfg: DictConfig) -> dict[str, Any]:
    check_config(cfg, app=PipelineApp)
    check_stage_overrides(cfg)
    from latency_lut.lut import LatencyLUT  # torch, pandas and onnxruntime load once the options are checked
    from latency_lut.timing import Protocol
    from search.report import format_rows, proxy_noise_lines, released_vs_derived
    from supernet.compute import resolve_device

    resolve_device(cfg.compute_device)  # before any stage: a missing GPU is a one-line error
    started = time.time()
    work = make_dir(Path(cfg.work_dir), "work_dir")
    n = 5
    clock = StageClock()
    banner(1, n, "latency LUT of this CPU (eformer-lut build + validate; "
                 f"{'the quick protocol: fewer repeats, noisier entries' if 'lut=quick' in cfg.lut_overrides else 'custom protocol'})")
    lut_path = lut_stage(cfg)
    clock.lap("LUT build + validation")
    banner(2, n, f"supernet over the space {cfg.search_space} on the embedded Fashion-MNIST subset (eformer-train)")
    supernet = run_training(compose("eformer_train", [f"compute_device={cfg.compute_device}", f"space={cfg.search_space}",
                                                      *cfg.train_overrides]))
    common = search_inputs(cfg, supernet, lut_path, f"{work}/search/proxy-cache.jsonl")
    clock.lap("supernet training")
    banner(3, n, f"search (eformer-search): slimming to {', '.join(b.upper() for b in cfg.budgets)}, then NSGA-II")
    runs = {}
    for b in cfg.budgets:
        runs[b] = search_stage(slimming_stage_overrides(cfg, b, f"{work}/search/slimming-{b}", common))
        clock.lap(f"slimming to {b.upper()}")
    nsga = search_stage(["search=nsga2", f"run_dir={work}/search/nsga2", *common, *cfg.nsga2_overrides])
    clock.lap("NSGA-II")
    banner(4, n, "export (eformer-export arch)")
    exports = {b: export_stage(f"{work}/search/slimming-{b}", "best", exporter=cfg.exporter) for b in cfg.budgets}
    exports["nsga2"] = export_stage(f"{work}/search/nsga2", "pareto", onnx=False)
    clock.lap("export")
    banner(5, n, "final table: released vs derived, measured end to end")
    final_file = work / "final.json"
    key = {b: r["best_trial"] for b, r in runs.items()} | {"lut": str(lut_path), "supernet": str(supernet), "format": 3}
    table = json.loads(final_file.read_text()) if final_file.is_file() else None
    if table is None or table.get("key") != key:
        protocol = Protocol(warmup=int(cfg.measure.warmup), repeats=int(cfg.measure.repeats), cache="warm")
        table = {"rows": released_vs_derived(runs, lut_path, protocol, bool(cfg.progress)),
                 "statistic": LatencyLUT.load(lut_path).statistic, "key": key}
        atomic_write_text(final_file, json.dumps(table, indent=1))
    else:
        print(f"reusing {final_file}")
    clock.lap("final measurement")
    print()
    print(format_rows(table["rows"]))
    print("\n".join(proxy_noise_lines(table["rows"])))
    print(f"\nLUT: {lut_path} (quick protocol when lut=quick: noisier than `eformer-lut build`'s default); "
          f"latency = ORT CPU, batch 1, 224 px, 1000 classes; measured = whole network, interleaved, {table['statistic']}")
    print(f"proxy = member of the supernet ({supernet}) after BN recalibration, scored on the whole val split; "
          "± = bootstrap standard deviation over the val images")
    for b, e in exports.items():
        files = [x.get("yaml") for x in e["exported"]]
        more = " ..." if len(files) > 3 else ""
        print(f"{b:6s} configs: {', '.join(map(str, files[:3]))}{more}; plots: {', '.join(e['plots'].values())}")
    print(f"NSGA-II: {nsga['trials']} trials, Pareto front of {len(exports['nsga2']['exported'])} exported configs")
    print()
    print(clock.table())
    print(f"eformer-pipeline: done in {time.time() - started:.0f} s (work dir {work})")
    return table


@hydra.main(config_path="../conf", config_name="eformer_pipeline", version_base="1.3")
@report_user_errors("eformer-pipeline")
def _hydra_main(cfg: DictConfig) -> None:
    run_pipeline(cfg)


def main() -> None:
    run_hydra_app("eformer-pipeline", _hydra_main)


if __name__ == "__main__":
    main()
