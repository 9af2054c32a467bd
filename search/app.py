"""``eformer-search``: search the supernet's space against a device LUT (Hydra app; conf/eformer_search.yaml).

    eformer-search                                           # slimming to the S0 budget (SQLite in the run dir)
    eformer-search search=nsga2 search.n_trials=200
    eformer-search search=tpe budget=none budget.latency_ms=20 budget.params_m=5
    eformer-search -m budget=s0,s1,s2,l                    # one study per budget
    eformer-search search=nsga2 storage=journal worker=1     # one of N workers on one study (start N of them)

Rerunning the same command continues the same study (finished work is not repeated). The run
directory gets search.json (what ``eformer-export arch --run DIR`` reads) and the study storage.
"""
from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import hydra
from omegaconf import DictConfig, OmegaConf

from conf.schemas import ProxySchema, SearchApp, check_config, register_schemas, typed
from search.budgets import Budget, budget_name
from supernet.arch import PRESETS, ArchConfig
from supernet.errors import UserError, report_user_errors, run_hydra_app
from supernet.io_utils import atomic_write_text, make_dir

if TYPE_CHECKING:  # torch, optuna and pandas load in the functions that use them: a mistake in the options is reported first
    import optuna
    from optuna.storages import BaseStorage

    from latency_lut.lut import LatencyLUT
    from search.metrics import CandidateEvaluator
    from supernet.elastic import Supernet

register_schemas()

OmegaConf.register_new_resolver("budget_name", budget_name, replace=True)


def file_digest(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:16]


def mes_settings(node: DictConfig) -> dict[str, Any]:
    """The ``mes`` group as a plain dict, in the form the untyped YAML gave it (``score: 100``, not ``100.0``),
    so the study names and settings digests of studies made before the group was typed stay the same."""
    mes = OmegaConf.to_container(node, resolve=True)
    if float(mes["score"]).is_integer():
        mes["score"] = int(mes["score"])
    return mes


def _settings(cfg: DictConfig, budget: Budget, space_hash: str, supernet_digest: str, lut: LatencyLUT) -> dict[str, Any]:
    """What must not change between a study and its continuation."""
    s = OmegaConf.to_container(cfg.search, resolve=True)
    s.pop("n_trials", None)
    return {"search": s, "budget": [budget.latency_ms, budget.params], "space": space_hash, "supernet": supernet_digest,
            "lut": [lut.meta.get("created"), lut.meta.get("calibration")], "mes": mes_settings(cfg.mes),
            "proxy": [cfg.proxy.kind, cfg.proxy.calib_images, cfg.proxy.val_images]}


def default_study_name(strategy: str, budget: Budget, settings: dict[str, Any]) -> str:
    """``<strategy>-<budget>-<8 hex>``: the digest of what must not change between a study and its
    continuation, so unrelated runs never share a study on a shared storage, while every worker of one
    experiment (same supernet, LUT and settings, on any host) joins the same one."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{strategy}-{budget.name}-{digest}"


def open_study(storage: BaseStorage, url: str, name: str, directions: list[str], settings: dict[str, Any],
               metric_names: Sequence[str]) -> optuna.Study:
    """Create or continue study ``name`` in ``storage`` (opened from ``url``); refuse one made with other settings."""
    import optuna

    study = optuna.create_study(study_name=name, storage=storage, directions=directions, load_if_exists=True)
    if study.metric_names != list(metric_names):  # labels the axes of optuna-dashboard and optuna.visualization
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    saved = study.user_attrs.get("settings")
    mine = json.loads(json.dumps(settings, default=str))
    if saved is None:
        study.set_user_attr("settings", mine)
    elif saved != mine:
        diff = sorted(k for k in mine if mine[k] != saved.get(k))
        raise UserError(f"study {name!r} in {url} was made with other settings ({', '.join(diff)}); "
                        "use another run_dir / study_name, or delete the old study")
    return study


def preset_points(supernet: Supernet, evaluator: CandidateEvaluator) -> dict[str, dict[str, Any]]:
    """The released presets that are members of the space, scored like every candidate (for plots and tables)."""
    out = {}
    for name in PRESETS:
        arch = supernet.member(ArchConfig.preset(name))
        if supernet.space.contains(arch):
            out[name] = {"summary": arch.summary(), **evaluator(arch).as_dict()}
    return out


def run_search(cfg: DictConfig) -> dict[str, Any]:
    """Run (or continue) the study described by ``cfg``; write ``<run_dir>/search.json``; return it."""
    check_config(cfg, app=SearchApp)
    import torch

    from latency_lut.lut import LatencyLUT, warn_if_foreign
    from search.budgets import resolve_budget
    from search.metrics import CandidateEvaluator, resolve_mes
    from search.proxies import build_proxy, proxy_description
    from search.results import completed
    from search.run_record import RUN_FILE, RUN_FORMAT
    from search.storage import dashboard_target, open_storage, storage_url
    from search.strategies import SearchContext, get_strategy
    from supernet.compute import resolve_device
    from supernet.elastic import Supernet
    from supernet.host_memory import reuse_freed_memory

    resolve_device(cfg.compute_device)  # before any work: a missing GPU is a one-line error
    reuse_freed_memory()
    started = time.time()
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    name = cfg.search.name
    strategy = get_strategy(name)  # an unknown name fails before any work
    if float(cfg.storage.heartbeat_s) * 2 > float(cfg.storage.grace_s):
        raise UserError(f"storage.heartbeat_s: {cfg.storage.heartbeat_s} must be at most half of storage.grace_s "
                        f"({cfg.storage.grace_s}): a live trial must beat several times within the grace period")
    run_dir = Path(cfg.run_dir)
    url = storage_url(OmegaConf.to_container(cfg.storage, resolve=True), run_dir)
    supernet = Supernet.load(cfg.supernet)
    space, context = supernet.space, dict(supernet.context)
    lut = LatencyLUT.load(cfg.lut_file, space)
    warn_if_foreign(lut, cfg.lut_file, "eformer-search")
    budget = resolve_budget(OmegaConf.to_container(cfg.budget, resolve=True), lut, space)
    missing = lut.missing(lut.in_context(space.largest()))
    if missing:
        raise UserError(f"{cfg.lut_file}: incomplete LUT, e.g. no entry for {missing[0]} (finish it with eformer-lut build)")
    digest = file_digest(supernet.source_path)
    proxy = build_proxy(typed(cfg.proxy, ProxySchema), supernet, digest, str(cfg.compute_device))
    evaluator = CandidateEvaluator(proxy, lut, resolve_mes(mes_settings(cfg.mes), lut))
    make_dir(run_dir, "run_dir")
    settings = _settings(cfg, budget, space.hash, digest, lut)
    study_name = str(cfg.study_name) if cfg.study_name else default_study_name(name, budget, settings)
    print(f"eformer-search: {name} on {space.name} ({space.hash}), budget {budget.describe()}, "
          f"study {study_name!r} in {url}; LUT {cfg.lut_file} measured on {lut.meta.get('machine', {}).get('cpu')} "
          f"({lut.meta.get('created')})")
    storage = open_storage(url)
    study = open_study(storage, url, study_name, strategy.directions, settings, strategy.metric_names)
    st = cfg.storage
    ctx = SearchContext(space, storage, context, evaluator, budget, strategy.settings(cfg.search), int(cfg.seed),
                        int(cfg.worker), float(st.heartbeat_s), float(st.grace_s), bool(cfg.progress))
    path_out = strategy.run(study, ctx)
    best = strategy.best_trial(study)
    presets = preset_points(supernet, evaluator)
    record = {
        "format": RUN_FORMAT, "strategy": name, "study_name": study_name, "storage": url,
        "budget": {"name": budget.name, "latency_ms": budget.latency_ms, "params": budget.params},
        "supernet": str(Path(supernet.source_path).resolve()), "supernet_digest": digest,
        "lut": str(Path(cfg.lut_file).resolve()), "space": {"name": space.name, "hash": space.hash},
        "context": context, "deploy_context": lut.context, "proxy": cfg.proxy.kind,
        "evaluations": proxy.evaluations, "screenings": getattr(proxy, "screenings", 0),
        "trials": len(completed(study)), "best_trial": best.number if best else None,
        "best": {k: best.user_attrs.get(k) for k in ("summary", "top1", "top1_std", "loss", "loss_std", "latency_ms",
                                                     "params", "macs", "mes", "feasible")} if best else None,
        "path": path_out,
        "presets": presets, "proxy_config": OmegaConf.to_container(cfg.proxy, resolve=True),
        "proxy_data": proxy_description(proxy),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_text(run_dir / RUN_FILE, json.dumps(record, indent=1))
    if best is not None:
        b = best.user_attrs
        print(f"eformer-search: best (trial {best.number}): {b['summary']}  top1 {b['top1']:.2f}% (+-{b.get('top1_std', 0):.2f})  "
              f"LUT {b['latency_ms']:.2f} ms  {b['params'] / 1e6:.2f} M params  {b['macs'] / 1e9:.3f} GMACs")
    else:
        print("eformer-search: no feasible trial yet")
    print(f"eformer-search: {record['trials']} trials in {url}; export with: eformer-export arch --run {run_dir} --best")
    target = dashboard_target(url)
    if target:
        print(f"eformer-search: browse the study with: optuna-dashboard {target}")
    return record


@hydra.main(config_path="../conf", config_name="eformer_search", version_base="1.3")
@report_user_errors("eformer-search")
def _hydra_main(cfg: DictConfig) -> None:
    check_config(cfg, app=SearchApp)  # before optuna loads: a mistake in the options is reported at once
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_search(cfg)


def main() -> None:
    """``eformer-search [overrides]``, or ``eformer-search validate-proxy [overrides]``."""
    import sys

    if "validate-proxy" in sys.argv[1:]:  # anywhere among Hydra's flags, like eformer-lut's subcommands
        from search.validate_proxy import main as validate_proxy_main

        sys.argv.remove("validate-proxy")
        run_hydra_app("eformer-search validate-proxy", validate_proxy_main)
    else:
        run_hydra_app("eformer-search", _hydra_main)


if __name__ == "__main__":
    main()
