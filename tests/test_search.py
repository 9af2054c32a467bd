"""Search: encodings, strategies, slimming and racing, bad overrides, export round trip, multirun - with a tiny
supernet and a tiny real-onnxruntime LUT (tests/search_assets.py). Storages and workers: test_search_storages.py."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch
from search_assets import DEPLOY, TINY, cli, overrides

from conf import compose
from latency_lut.lut import LatencyLUT
from search.app import run_search
from search.params import arch_from_params, arch_hash, distributions, params_of
from search.results import arch_of, completed, load_study
from search.run_record import read_run
from search.slimming import Action, apply_action, candidate_actions
from supernet import ArchConfig
from supernet.elastic import Supernet
from supernet.model import build_model
from supernet.signatures import count_params
from supernet.space import SearchSpace


def test_params_encode_every_member():
    rng = random.Random(0)
    default = SearchSpace.load("efficientformerv2")
    archs = [TINY.sample(rng) for _ in range(30)] + [ArchConfig.preset(p) for p in ("s0", "s1", "s2", "l")]
    for a in archs:
        space = TINY if a.name == "sample" else default
        p = params_of(a, space)
        assert set(p) == set(distributions(space))
        assert all(p[k] in d.choices for k, d in distributions(space).items())
        b = arch_from_params(p, space, image_size=a.image_size, num_classes=a.num_classes, distillation=a.distillation)
        assert arch_hash(b) == arch_hash(a)


def test_slimming_actions_stay_in_space():
    big = TINY.largest(**DEPLOY)
    moves = candidate_actions(big, TINY)
    kinds = {a.kind for a, _ in moves}
    assert kinds == {"drop_ffn", "drop_attn", "width", "expansion"}
    for a, nxt in moves:
        assert TINY.contains(nxt) and nxt != big
    assert apply_action(TINY.smallest(**DEPLOY), Action("width", 0), TINY) is None


@pytest.mark.slow  # 10 s: the fast suite's budget; the slow suite (CI) runs it
def test_slimming_meets_budget_records_candidates_and_resumes(assets, tmp_path):
    lut = LatencyLUT.load(assets / "tiny.parquet")
    lo, hi = (lut.predict(lut.in_context(a)) for a in (TINY.smallest(), TINY.largest()))
    budget = round(lo + 0.4 * (hi - lo), 4)
    cfg = compose("eformer_search", overrides(assets, tmp_path / "slim", f"budget.latency_ms={budget}",
                                              "budget=none"))
    rec = run_search(cfg)
    assert rec["best"]["latency_ms"] <= budget and rec["best"]["feasible"]
    assert rec["path"][0]["action"].startswith("start") and len(rec["path"]) >= 2
    study = load_study(rec)
    trials = completed(study)
    steps = {t.user_attrs["step"] for t in trials}
    assert steps == set(range(len(rec["path"])))
    assert sum(1 for t in trials if t.user_attrs["chosen"]) == len(rec["path"])
    assert rec["trials"] == len(trials) > len(rec["path"])  # the losing candidates are recorded too
    again = run_search(cfg)  # continuing a finished study: same result, nothing recorded twice
    assert again["best_trial"] == rec["best_trial"] and again["trials"] == rec["trials"]


@pytest.mark.slow
def test_racing_screens_out_candidates_and_keeps_partial_scores_out_of_the_cache(assets, tmp_path):
    """race_z=inf keeps every candidate (the exhaustive path, evaluation for evaluation); race_z=0 confirms
    fewer on the whole split, and what it only screened is neither cached nor recorded as a trial. Its screenings
    are kept beside the score cache: a rerun, and a looser budget, decide the same and compute nothing."""
    lut = LatencyLUT.load(assets / "tiny.parquet")
    lo, hi = (lut.predict(lut.in_context(a)) for a in (TINY.smallest(), TINY.largest()))
    common = [f"budget.latency_ms={round(lo + 0.3 * (hi - lo), 4)}", "budget=none", "storage=memory", "proxy.cache=null",
              "proxy.val_images=120", "proxy.batch_size=24"]
    cache = tmp_path / "scores.jsonl"
    racing = ["search.race=true", "search.race_z=0", "search.screen_fraction=0.2", f"proxy.cache={cache}"]
    runs = {}
    for label, extra in (("exhaustive", []), ("wide", ["search.race=true", "search.race_z=1e9"]),
                         ("tight", racing), ("again", racing),
                         ("looser", [*racing, f"budget.latency_ms={round(lo + 0.6 * (hi - lo), 4)}"])):
        runs[label] = run_search(compose("eformer_search", overrides(assets, tmp_path / label, *common, *extra)))
    ex, wide, tight, again, looser = (runs[k] for k in ("exhaustive", "wide", "tight", "again", "looser"))
    assert wide["path"] == ex["path"] and wide["evaluations"] == ex["evaluations"] and wide["screenings"] > 0
    assert tight["evaluations"] < ex["evaluations"] and tight["screenings"] > 0 and ex["screenings"] == 0
    assert tight["trials"] < ex["trials"]  # screened-out candidates are not trials with partial scores
    assert tight["best"]["feasible"]
    # the score cache holds whole-split scores only; the screenings live in the sidecar, for later runs
    scored = [json.loads(line)["arch_hash"] for line in cache.read_text().splitlines()]
    assert len(scored) == len(set(scored)) == tight["trials"]  # one whole-split score per candidate, nothing partial
    assert len((tmp_path / "scores.screenings.jsonl").read_text().splitlines()) == tight["screenings"]
    assert again["path"] == tight["path"] and again["evaluations"] == again["screenings"] == 0
    # one move per step: a looser budget walks a prefix of the tighter one's path, all of it stored
    assert looser["evaluations"] == looser["screenings"] == 0 and looser["path"] == tight["path"][:len(looser["path"])]


def test_sampler_strategies_in_memory(assets, tmp_path):
    for strat in ("nsga2", "tpe", "mes", "random"):
        rec = run_search(compose("eformer_search", overrides(
            assets, tmp_path / strat, f"search={strat}", "search.n_trials=12", "storage=memory", "proxy.kind=analytic",
            "budget=none", "budget.params_m=1.0")))
        assert rec["trials"] == 12, strat
        assert rec["best"] is not None and rec["best"]["feasible"] and rec["best"]["params"] <= 1_000_000


BAD_OVERRIDES = [
    (["search.name=anneal"], "search.name: 'anneal' is not one of mes, nsga2, random, slimming, tpe"),
    (["budget=none", "budget.latency_ms=0.0001"], "is below the smallest member's"),
    (["budget=none", "budget.params_m=0.001"], "parameters is below the smallest member's"),
    (["budget.preset=s7"], "budget.preset: 's7' is not one of s0, s1, s2, l"),
    (["budget=s1"], "budget: preset 's1' cannot be timed with this LUT (space tiny)"),
    (["search=nsga2", "search.n_trials=-5"], "search.n_trials: -5 must be >= 1"),
    (["search=nsga2", "search.n_trials=0"], "search.n_trials: 0 must be >= 1"),
    (["threads=-1"], "threads: -1 must be >= 1"),
    (["storage.grace_s=0"], "storage.grace_s: 0.0 must be > 0"),
    (["lut_file=/nonexistent/lut.parquet"], "/nonexistent/lut.parquet: LUT file not found"),
    (["supernet=/nonexistent"], "supernet file not found"),
    (["storage.kind=redis"], "storage.kind: 'redis' is not one of sqlite, journal, url, memory"),
    (["search.actions=[drop,prune]"], "give a non-empty subset of drop, width, expansion, heads ('prune' is not one)"),
]


@pytest.fixture(scope="module")
def bad_override_runs(assets, tmp_path_factory):
    """Every bad-override case run at once (each process mostly imports, on one core): case -> (rc, stderr, dir)."""
    root = tmp_path_factory.mktemp("bad-overrides")
    procs = [(root / f"bad{i}", cli(assets, root / f"bad{i}", *extra)) for i, (extra, _) in enumerate(BAD_OVERRIDES)]
    runs = {}
    for i, (run_dir, p) in enumerate(procs):
        _, err = p.communicate(timeout=300)
        runs[i] = (p.returncode, err, run_dir)
    return runs


@pytest.mark.parametrize("case", range(len(BAD_OVERRIDES)), ids=[" ".join(e) for e, _ in BAD_OVERRIDES])
@pytest.mark.slow
def test_bad_overrides_are_one_line_errors(bad_override_runs, case):
    rc, err, run_dir = bad_override_runs[case]
    assert rc == 2, err
    assert BAD_OVERRIDES[case][1] in err and "Traceback" not in err
    assert not run_dir.exists()  # nothing written


@pytest.mark.slow
def test_unknown_strategy_group_and_foreign_lut(assets, tmp_path):
    p = cli(assets, tmp_path / "bad", "search=anneal")
    _, err = p.communicate(timeout=120)
    assert p.returncode != 0 and "Could not find 'search/anneal'" in err and "Traceback" not in err
    spec = TINY.to_dict()
    spec["name"], spec["stages"][0]["widths"] = "tiny-other", [8]
    other = SearchSpace.from_dict(spec)
    assert other.hash != TINY.hash
    net = Supernet(other, image_size=32, num_classes=10, distillation=False)
    net.save(tmp_path / "other.pt", train_config=torch.load(assets / "supernet.pt", weights_only=True)["train_config"])
    p = cli(assets, tmp_path / "bad", f"supernet={tmp_path / 'other.pt'}")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "was built for space tiny" in err and "build a LUT for this space" in err


@pytest.mark.slow
def test_export_round_trip_and_fine_tune(assets, tmp_path):
    run = tmp_path / "nsga"
    rec = run_search(compose("eformer_search", overrides(assets, run, "search=nsga2", "search.n_trials=10")))
    out = tmp_path / "export"
    res = subprocess.run(["eformer-export", "arch", "--run", str(run), "--pareto", "--out", str(out), "--exporter", "fast"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "export.json").read_text())
    lut = LatencyLUT.load(assets / "tiny.parquet", TINY)
    study = load_study(rec)
    assert manifest["exported"]
    for e in manifest["exported"]:
        trial = study.get_trials()[e["trial"]]
        arch = ArchConfig.from_yaml(e["yaml"])
        model = build_model(arch)
        assert sum(p.numel() for p in model.parameters()) == count_params(arch) == trial.user_attrs["params"]
        assert lut.predict(arch) == pytest.approx(trial.user_attrs["latency_ms"], rel=1e-12)
        assert arch_hash(arch) == arch_hash(arch_of(trial))
        saved = torch.load(e["weights"], weights_only=True)
        build_model(ArchConfig.from_dict(saved["arch"])).load_state_dict(saved["model"], strict=True)
        assert e["onnx_max_abs_diff"] <= 1e-4
    assert (out / "pareto.png").stat().st_size > 0
    import pandas as pd

    table = pd.read_csv(out / "trials.csv")  # Optuna's trials_dataframe with the study's metric names, plus the arch
    assert len(table) == 10 and {"number", "state", "datetime_start", "user_attrs_latency_ms", "arch"} <= set(table.columns)
    assert {f"values_{m}" for m in study.metric_names} <= set(table.columns)
    assert not [c for c in table.columns if "heartbeat" in c]
    first = manifest["exported"][0]
    res = subprocess.run(["eformer-lut", "predict", "space=tiny", f"out={assets / 'tiny.parquet'}", f"arch_file={first['yaml']}"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and f"{first['latency_ms']:.3f} ms predicted" in res.stdout, res.stderr
    res = subprocess.run(["eformer-train", "space=tiny", "data=digits", f"finetune.arch={first['yaml']}",
                          f"finetune.weights={first['weights']}",
                          f"run_dir={tmp_path / 'ft'}", "train.epochs=1", "train.progress=false", "train.eval_presets=[]",
                          "train.threads=1"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-800:]
    tuned = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)
    build_model(ArchConfig.from_dict(tuned["arch"])).load_state_dict(tuned["model"], strict=True)
    assert arch_hash(ArchConfig.from_dict(tuned["arch"])) == arch_hash(ArchConfig.from_yaml(first["yaml"]))
    res = subprocess.run(["eformer-export", "onnx", "--weights", str(tmp_path / "ft" / "model.pt"), "--out",
                          str(tmp_path / "ft.onnx"), "--exporter", "fast"], capture_output=True, text=True)
    assert res.returncode == 0 and "onnxruntime max |diff|" in res.stdout, res.stderr
    res = subprocess.run(["eformer-export", "arch", "--run", str(run), "--trial", "999", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--trial: 999 is not a completed trial" in res.stderr


@pytest.mark.slow
def test_multirun_one_study_per_budget(assets, tmp_path):
    lut = LatencyLUT.load(assets / "tiny.parquet")
    lo, hi = (lut.predict(lut.in_context(a)) for a in (TINY.smallest(), TINY.largest()))
    budgets = [round(lo + f * (hi - lo), 3) for f in (0.3, 0.7)]
    extra = [o for o in overrides(assets, "unused") if not o.startswith("run_dir=")]
    res = subprocess.run([sys.executable, "-m", "search.app", "-m", *extra, "budget=none",
                          f"budget.latency_ms={budgets[0]},{budgets[1]}"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-800:]
    for b in budgets:
        run = read_run(tmp_path / "runs" / "search" / f"slimming-{b:g}ms")
        assert run["budget"]["latency_ms"] == pytest.approx(b) and run["best"]["latency_ms"] <= b
