"""Proxy fidelity against its own ceiling, and what the supernet recipe does to it (embedded Fashion-MNIST).

For each recipe setting, one factor at a time from the default (in-place distillation on/off, 1 or 2 random
members per sandwich step, the main job's length and 3x it): train the supernet, then ``eformer-search
validate-proxy`` (members stratified over LUT latency, each trained alone with the same recipe and steps, with
``--standalone-seeds`` seeds). Reported per setting: Kendall's tau of the proxy's val loss against the standalone
seed-mean, with its 90 % bootstrap interval and its ratio to the split-half ceiling; the largest and smallest
members' top-1 in the supernet against standalone at the same steps; the released S0-L as members; and at
each length whether the members' standalone spread exceeds the seed noise at all.

    python -m experiments.proxy_validation                       # 4 settings, 20 members x 2 seeds (~2.5 h, 2 cores)
    python -m experiments.proxy_validation --settings default --members 6    # a quick look
    python -m experiments.proxy_validation --part members        # supernets + members only (~25 min, 2 cores)

``--part members`` trains each setting's supernet and reports only the members side (largest and smallest, as
members and alone; the released S0-L as members) into proxy_recipe_members.{md,json}, without the validations.

Standalone runs are shared between settings of equal length (they do not depend on the sandwich settings), and
everything lives in --work: a killed study resumes where it stopped. Writes
experiments/results/proxy_validation.{md,json} and a scatter plot per setting beside them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from conf import compose
from experiments.common import RESULTS, machine_header, write_result
from search.params import arch_hash
from search.proxies import supernet_data
from search.proxy import SupernetProxy
from search.standalone import standalone_run_dir, train_standalone
from search.validate_proxy import format_report, format_tau, run_validate_proxy, spread_line
from supernet.arch import ArchConfig
from supernet.data import build_data
from supernet.elastic import Supernet
from supernet.train.app import run_training

SETTINGS = {  # one factor at a time from the default recipe (conf/train/default.yaml)
    "default": [],
    "no-distillation": ["train.inplace_distillation=false"],
    "one-random": ["train.num_random=1"],
    "3x-length": ["train.epochs=3"],
}
PRESETS = ("s0", "s1", "s2", "l")


def extremes(supernet: Supernet, train_config: dict[str, Any], standalone: Path, seeds: int,
             threads: int) -> dict[str, Any]:
    """The largest and smallest members and the released S0-L, scored as members; the extremes also trained
    alone (same recipe and steps, ``seeds`` seeds)."""
    proxy = SupernetProxy.from_data(supernet, build_data(supernet_data(supernet, None)))
    archs = {"largest": supernet.largest(), "smallest": supernet.smallest(),
             **{p: supernet.member(ArchConfig.preset(p)) for p in PRESETS}}
    out: dict[str, Any] = {}
    for name, arch in archs.items():
        score = proxy(arch)
        out[name] = {"member_top1": score["top1"], "member_top1_std": score["top1_std"], "member_loss": score["loss"]}
        if name in ("largest", "smallest"):
            runs = [train_standalone(train_config, arch, standalone_run_dir(standalone, arch_hash(arch), train_config, k),
                                     seed=k, threads=threads) for k in range(seeds)]
            out[name]["standalone_top1"] = [r["top1"] for r in runs]
    return out


def train_setting(work: Path, name: str, threads: int) -> tuple[Path, dict[str, Any]]:
    """Train (or reuse) the setting's supernet; its directory and final.json."""
    sn = work / f"sn-{name}"
    run_training(compose("eformer_train", [*SETTINGS[name], "train.eval_presets=[]", "train.progress=false",
                                           f"train.threads={threads}", f"run_dir={sn}"]))
    return sn, json.loads((sn / "final.json").read_text())


def members_of_setting(work: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Only the members side of a setting: its supernet, the extremes and the released S0-L."""
    started = time.time()
    sn, final = train_setting(work, name, args.threads)
    supernet = Supernet.load(sn / "supernet.pt")
    ext = extremes(supernet, dict(supernet.train_config), work / "standalone", args.standalone_seeds, args.threads)
    return {"setting": name, "overrides": SETTINGS[name], "steps": final["steps"],
            "supernet_seconds": final["seconds_this_session"], "members": ext, "seconds": time.time() - started}


def members_table(results: list[dict[str, Any]], seeds: int) -> list[str]:
    lines = [f"| setting | steps | largest: member / standalone top-1 ({seeds} seeds) | smallest: member / standalone "
             "top-1 | largest - smallest: member / standalone (points) | released S0 / S1 / S2 / L as members: top-1 "
             "| released S0 / S1 / S2 / L as members: val loss |", "|---|---|---|---|---|---|---|"]
    for r in results:
        m = r["members"]
        alone = {k: statistics.fmean(m[k]["standalone_top1"]) for k in ("largest", "smallest")}
        ext = [f"{member_vs_alone(m, k)} ({', '.join(f'{v:.2f}' for v in m[k]['standalone_top1'])})"
               for k in ("largest", "smallest")]
        gap = f"{m['largest']['member_top1'] - m['smallest']['member_top1']:+.2f} / {alone['largest'] - alone['smallest']:+.2f}"
        top1 = " / ".join(f"{m[p]['member_top1']:.2f}" for p in PRESETS)
        loss = " / ".join(f"{m[p]['member_loss']:.4f}" for p in PRESETS)
        lines.append(f"| {r['setting']} | {r['steps']} | {ext[0]} | {ext[1]} | {gap} | {top1} | {loss} |")
    return lines


def members_report(results: list[dict[str, Any]], args: argparse.Namespace, seconds: float) -> None:
    lines = ["# The recipe settings' members: extremes and released S0-L (generated by experiments/proxy_validation.py "
             "--part members)", "", machine_header(), "",
             "Embedded Fashion-MNIST, 32 px; one supernet per setting (one factor of the default recipe changed). "
             "Members are scored in the supernet on the whole 2,500-image val split after BN recalibration; the largest "
             "and smallest are also trained alone from scratch with the same recipe and steps. The validations "
             "(tau against standalone training, 20 members) are the per-setting reports of the full study.", "",
             *members_table(results, args.standalone_seeds), ""]
    lines += [f"- {r['setting']} (`{' '.join(r['overrides']) or 'the default recipe'}`): supernet "
              f"{r['supernet_seconds']:.0f} s, setting {r['seconds']:.0f} s." for r in results]
    lines += ["", f"Command: `python -m experiments.proxy_validation --part members --settings {' '.join(args.settings)} "
                  f"--standalone-seeds {args.standalone_seeds}`; {seconds:.0f} s in this invocation (runs reused from "
                  "--work are not counted again).", ""]
    write_result("proxy_recipe_members", "\n".join(lines), results)
    print("\n".join(lines))


def one_setting(work: Path, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """A setting's validation (20 members against standalone training), then its members side."""
    started = time.time()
    sn, _ = train_setting(work, name, args.threads)
    vp_dir = work / f"vp-{name}"
    vp = run_validate_proxy(compose("eformer_validate_proxy", [
        f"supernet={sn}", f"lut_file={args.lut}", f"members={args.members}", f"standalone_seeds={args.standalone_seeds}",
        f"standalone_dir={work / 'standalone'}", "progress=true", f"threads={args.threads}", f"run_dir={vp_dir}"]))
    shutil.copy(vp_dir / "proxy_validation.png", RESULTS / f"proxy_validation_{name}.png")
    return {**members_of_setting(work, name, args), "validation": vp, "seconds": time.time() - started}


def member_vs_alone(m: dict[str, Any], which: str) -> str:
    """``<top-1 as a member> / <standalone seed-mean>`` of the largest or smallest member."""
    return f"{m[which]['member_top1']:.2f} / {statistics.fmean(m[which]['standalone_top1']):.2f}"


def summary_table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| setting | steps | tau: proxy loss vs standalone top-1 [90 %] | split-half ceiling [90 %] | ratio | "
             "tau: proxy loss vs standalone loss [90 %] | largest: member / standalone top-1 | smallest: member / "
             "standalone top-1 | released S0 / S1 / S2 / L as members (top-1) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        st, m = r["validation"]["stats"], r["members"]
        ext = [member_vs_alone(m, k) for k in ("largest", "smallest")]
        rel = " / ".join(f"{m[p]['member_top1']:.2f}" for p in PRESETS)
        lines.append(f"| {r['setting']} | {r['steps']} | {format_tau(st['loss_vs_top1'])} | {format_tau(st['ceiling']['top1'])} | "
                     f"{st['loss_vs_top1']['ratio_to_ceiling']:.2f} | {format_tau(st['loss_vs_loss'])} | {ext[0]} | {ext[1]} | {rel} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="runs/proxy_fidelity")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--standalone-seeds", type=int, default=2)
    parser.add_argument("--lut", default="luts/ort-cpu-efficientformerv2-224.parquet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=["all", "members"], default="all")
    args = parser.parse_args()
    work = Path(args.work)
    started = time.time()
    if args.part == "members":
        members_report([members_of_setting(work, name, args) for name in args.settings], args, time.time() - started)
        return
    results = [one_setting(work, name, args) for name in args.settings]
    lines = ["# Proxy fidelity against its ceiling, per supernet recipe (generated by experiments/proxy_validation.py)",
             "", machine_header(), "",
             f"Embedded Fashion-MNIST, 32 px. Each setting changes one factor of the default recipe; its supernet is "
             f"trained, then `eformer-search validate-proxy members={args.members} standalone_seeds={args.standalone_seeds}`: "
             "members stratified over LUT latency (the same members in every setting), each trained alone from scratch "
             "with the same recipe and steps. Kendall tau-b with a paired bootstrap 90 % interval over members; ceiling: "
             "tau between the standalone seed halves' means. Members' top-1: whole 2,500-image val split after BN "
             "recalibration.", "", *summary_table(results), ""]
    for r in results:
        st = r["validation"]["stats"]
        lines += [f"Standalone spread at {r['steps']} steps ({r['setting']}): top-1 {spread_line(st['spread_top1'], ' pt')}.", ""]
    for r in results:
        lines += [f"## {r['setting']} (`{' '.join(r['overrides']) or 'the default recipe'}`, {r['steps']} steps; "
                  f"supernet {r['supernet_seconds']:.0f} s, setting {r['seconds']:.0f} s)", "",
                  f"![scatter](proxy_validation_{r['setting']}.png)", "",
                  *format_report(r["validation"]).splitlines()[2:], ""]
    lines += [f"Command: `python -m experiments.proxy_validation --settings {' '.join(args.settings)} --members "
              f"{args.members} --standalone-seeds {args.standalone_seeds}`; {time.time() - started:.0f} s in this "
              "invocation (runs reused from --work are not counted again).", ""]
    write_result("proxy_validation", "\n".join(lines), results)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
