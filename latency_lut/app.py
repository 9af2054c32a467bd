"""``eformer-lut``: build, validate and inspect latency lookup tables (Hydra app; conf/eformer_lut.yaml).

    eformer-lut build space=efficientformerv2 device=ort image_size=224
    eformer-lut validate                    # fit the correction, report accuracy, write the scatter PNG
    eformer-lut show
    eformer-lut predict arch_file=runs/search/slimming-s0/export/<name>.yaml   # or arch_file=s1
    eformer-lut build device=command device.command='adb ... {onnx} ...' device.regex='avg=([0-9.]+)'
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from omegaconf import DictConfig, OmegaConf

from conf.schemas import LutApp, check_config, register_schemas
from supernet.arch import ArchConfig
from supernet.errors import UserError, report_user_errors, run_hydra_app
from supernet.space import SearchSpace

if TYPE_CHECKING:  # torch, onnxruntime and pandas load in run_lut: a mistake in the options is reported first
    from latency_lut.timing import Protocol

register_schemas()

COMMANDS = ("build", "validate", "show", "predict", "check")


def _protocol(cfg: DictConfig) -> Protocol:
    from latency_lut.timing import Protocol

    return Protocol(**OmegaConf.to_container(cfg, resolve=True))


def format_validation(rep: dict) -> str:
    """The validation's lines: the chosen calibration, each model's held-out figures, the machine's ceiling."""
    cal = rep["calibration"]

    def fig(m: dict) -> str:
        return (f"MAPE {m['mape_pct']:5.2f}%, within 10% {100 * m['within_10pct']:3.0f}%, within 5% {100 * m['within_5pct']:3.0f}%, "
                f"Kendall tau {m['kendall_tau']:.3f}")

    lines = [f"eformer-lut: calibration {cal['model']} fitted on {rep['fit']} members (pass 1), held out {rep['held_out']}:"]
    for name, m in rep["held_out_by_model"].items():
        lines.append(f"  {name:9s}{' (chosen)' if name == cal['model'] else '         '} {fig(m)}")
    if rep.get("repeatability_pass2_vs_pass1"):
        lines.append(f"  pass 2 vs 1  {fig(rep['repeatability_pass2_vs_pass1'])}   <- the measurement's own repeatability")
    return "\n".join(lines)


def run_lut(cfg: DictConfig) -> dict:
    """Run ``cfg.command`` and return a small summary."""
    check_config(cfg, app=LutApp)
    from latency_lut.backends import make_backend
    from latency_lut.build import build_lut
    from latency_lut.check import check_lut, format_check
    from latency_lut.lut import LatencyLUT, warn_if_foreign
    from latency_lut.validate import validate_lut

    space = SearchSpace.from_dict(OmegaConf.to_container(cfg.space, resolve=True))
    out = Path(cfg.out)
    if cfg.command == "show":
        lut = LatencyLUT.load(out)
        print(lut.describe())
        return {"entries": len(lut)}
    if cfg.command == "predict":
        if not cfg.get("arch_file"):
            raise UserError("arch_file: give an ArchConfig YAML or a preset name to predict")
        lut = LatencyLUT.load(out, space)
        warn_if_foreign(lut, out, "eformer-lut")
        arch = lut.in_context(ArchConfig.resolve(cfg.arch_file))
        ms = lut.predict(arch)
        print(f"{arch.name}: {ms:.3f} ms predicted by {out} ({arch.summary()})")
        return {"latency_ms": ms}
    backend = make_backend(OmegaConf.to_container(cfg.device, resolve=True))
    if cfg.command == "build":
        lut = build_lut(space, backend, out, int(cfg.image_size), int(cfg.num_classes), bool(cfg.distillation),
                        int(cfg.batch_size), _protocol(cfg.lut.protocol), str(cfg.device.name), bool(cfg.lut.progress),
                        cfg.lut.get("limit"), str(cfg.lut.get("statistic", "q25")), int(cfg.lut.get("interleave", 16)))
        print(f"eformer-lut: {out} has {len(lut)} entries (complete={lut.meta['complete']}); CSV: {out.with_suffix('.csv')}")
        return {"entries": len(lut), "complete": lut.meta["complete"]}
    if cfg.command == "check":
        lut = LatencyLUT.load(out, space)
        warn_if_foreign(lut, out, "eformer-lut")
        c = cfg.lut.check
        rep = check_lut(lut, space, backend, int(c.members), int(c.seed), _protocol(c.protocol),
                        float(c.tolerance), float(c.required_share), bool(cfg.lut.progress))
        print(format_check(str(out), rep))
        return rep
    if cfg.command == "validate":
        v = cfg.lut.validate
        report_dir = Path(v.report_dir) if v.get("report_dir") else out.with_name(out.stem + "-validation")
        rep = validate_lut(out, space, backend, int(v.members), int(v.seed), _protocol(v.protocol), float(v.fit_fraction),
                           report_dir, bool(cfg.lut.progress), int(v.passes))
        print(format_validation(rep))
        for name, p in rep["presets"].items():
            print(f"  {name.upper():3s} LUT {p['lut_ms']:7.2f} ms  measured {p['measured_ms']:7.2f} ms  ({p['error_pct']:+.1f}%)")
        print(f"report: {report_dir}/lut_validation.json, {report_dir}/lut_validation.png")
        return rep
    raise UserError(f"command: {cfg.command!r} is not one of {', '.join(COMMANDS)}")


@hydra.main(config_path="../conf", config_name="eformer_lut", version_base="1.3")
@report_user_errors("eformer-lut")
def _hydra_main(cfg: DictConfig) -> None:
    run_lut(cfg)


def main() -> None:
    """``eformer-lut COMMAND [overrides...]``: the command becomes the ``command=`` override."""
    # the subcommand may stand anywhere among Hydra's own flags: `eformer-lut --cfg job build` works too
    flags_with_value = ("--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-path", "-cp")
    at = next((i for i, a in enumerate(sys.argv[1:], 1) if a in COMMANDS and sys.argv[i - 1] not in flags_with_value), None)
    if at is not None:
        sys.argv = [sys.argv[0], *sys.argv[1:at], f"command={sys.argv[at]}", *sys.argv[at + 1:]]
    run_hydra_app("eformer-lut", _hydra_main)


if __name__ == "__main__":
    main()
