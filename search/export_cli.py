"""``eformer-export``: convert checkpoints, write ONNX files, export searched architectures.

    eformer-export convert --src eformer_s0_450.pth --arch s0 --source official --out s0.pth
    eformer-export onnx --arch s0 [--weights s0.pth] [--image-size 224] [--out s0.onnx]
    eformer-export arch --run runs/search/slimming-s0 (--best | --pareto | --trial N) [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Optional, Sequence

from conf.schemas import CHECKPOINT_SOURCES, DEFAULT_OPSET, DYNAMO_MIN_OPSET, EXPORTERS, MAX_OPSET, MIN_OPSET
from search.run_record import read_run
from supernet.arch import ArchConfig
from supernet.errors import UserError, report_user_errors
from supernet.io_utils import atomic_torch_save, check_output, safe_torch_load

if TYPE_CHECKING:  # torch loads in the commands: a mistake in the flags is reported first
    from supernet.model import EfficientFormerV2


def weights_arch(weights: str) -> ArchConfig:
    """The architecture recorded in a weights file of ours (eformer-export arch, eformer-train fine-tuning)."""
    obj = safe_torch_load(weights, UserError, "PyTorch checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("arch"), dict):
        raise UserError(f"{weights}: records no architecture; give --arch (a preset or an ArchConfig YAML)")
    return ArchConfig.from_dict(obj["arch"], source=f"{weights} arch")


def load_network(arch: Optional[str], weights: Optional[str], source: str, image_size: Optional[int] = None) -> EfficientFormerV2:
    """Build ``arch`` (preset or YAML; default: the one recorded in ``weights``) and load ``weights``
    (converted from ``source``) if given."""
    overrides = {"image_size": image_size} if image_size is not None else {}
    if arch is None:
        if not weights:
            raise UserError("--arch: required unless --weights records its architecture")
        config = weights_arch(weights).replace(**overrides)
    else:
        config = ArchConfig.resolve(arch, **overrides)  # a bad --arch is reported before torch loads
    from supernet.convert import convert_state_dict, load_converted, read_checkpoint
    from supernet.model import build_model

    model = build_model(config)
    if weights:
        load_converted(model, convert_state_dict(read_checkpoint(weights), source), weights)
    return model.eval()


def cmd_convert(args: argparse.Namespace) -> None:
    check_output(Path(args.out), args.src)
    model = load_network(args.arch, args.src, args.source)
    atomic_torch_save(model.state_dict(), args.out)
    print(f"converted {args.src} ({args.source}) -> {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


def cmd_onnx(args: argparse.Namespace) -> None:
    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise UserError(f"--opset: {args.opset} is not supported ({MIN_OPSET}..{MAX_OPSET})")
    if args.image_size is not None and (args.image_size < 32 or args.image_size > 2048 or args.image_size % 32):
        raise UserError(f"--image-size: {args.image_size} is not a multiple of 32 between 32 and 2048 (omit it to keep "
                        "the architecture's)")
    if args.out is not None:
        if not args.out.strip():
            raise UserError("--out: empty; give a file path (omit --out for <arch name>.onnx)")
        check_output(Path(args.out), args.weights)
    model = load_network(args.arch, args.weights, args.source, args.image_size)
    from supernet.onnx_export import check_onnx_parity, export_onnx

    size = model.arch.image_size
    out = check_output(Path(args.out if args.out is not None else f"{model.arch.name}.onnx"), args.weights)
    diffs: list[float] = []
    parity = None if args.no_check else (lambda tmp: diffs.append(check_onnx_parity(model, tmp, name=out)))
    export_onnx(model, out, (1, 3, size, size), opset=args.opset, exporter=args.exporter, check=parity)
    msg = f"wrote {out} (opset {args.opset}, input 1x3x{size}x{size}, dynamic batch)"
    if diffs:
        msg += f"; onnxruntime max |diff| vs PyTorch = {diffs[0]:.2e}"
    print(msg)


def cmd_arch(args: argparse.Namespace) -> None:
    read_run(args.run)  # a wrong --run is reported before torch, optuna and pandas load (export_arch reads it again)
    from search.export_arch import export_arch

    which: str | int = args.trial if args.trial is not None else ("pareto" if args.pareto else "best")
    export_arch(args.run, which, args.out, not args.no_onnx, exporter=args.exporter)


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``eformer-export onnx: error: ...``), exit 2, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="eformer-export", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("convert", help="convert a release/timm checkpoint to this project's layout")
    p.add_argument("--src", required=True, help="checkpoint file (release {'model': ...}, bare or timm state dict)")
    p.add_argument("--arch", required=True, help="preset name (s0, s1, s2, l) or ArchConfig YAML")
    p.add_argument("--source", choices=CHECKPOINT_SOURCES, default="official", help="layout of --src")
    p.add_argument("--out", required=True, help="output state dict (.pth)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("onnx", help="export a network to ONNX (deploy form) and check it under onnxruntime")
    p.add_argument("--arch", help="preset name (s0, s1, s2, l) or ArchConfig YAML (default: the architecture "
                                   "recorded in --weights, for files from eformer-export arch / eformer-train fine-tuning)")
    p.add_argument("--weights", help="state dict to load (default: random init)")
    p.add_argument("--source", choices=CHECKPOINT_SOURCES, default="ours", help="layout of --weights")
    p.add_argument("--image-size", type=int, help="override the architecture's image size")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET}, default {DEFAULT_OPSET}; 17 only with the TorchScript exporter)")
    p.add_argument("--out", help="output .onnx (default: <arch name>.onnx)")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="auto (default): the torch.export-based exporter, the legacy TorchScript one where it fails "
                        "(same graph and latency under onnxruntime: experiments/results/bench_exporters.md)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.set_defaults(func=cmd_onnx)

    p = sub.add_parser("arch", help="export searched architectures (YAML, weights, ONNX, trials CSV, plots)")
    p.add_argument("--run", required=True, help="an eformer-search run directory (holds search.json)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--best", action="store_true", help="the run's best member (slimming: the end of the path)")
    which.add_argument("--pareto", action="store_true", help="every member on the feasible accuracy-latency front")
    which.add_argument("--trial", type=int, help="one trial by number")
    p.add_argument("--out", help="output directory (default: <run>/export)")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX files")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto",
                   help="auto (default): the torch.export-based exporter, TorchScript where it fails; fast: TorchScript "
                        "first (5-10x quicker to export, the same latency: experiments/results/bench_exporters.md)")
    p.set_defaults(func=cmd_arch)
    return parser


@report_user_errors("eformer-export")
def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    opset = getattr(args, "opset", DEFAULT_OPSET)
    if opset < MIN_OPSET:
        raise UserError(f"--opset: {opset} is below the supported minimum {MIN_OPSET}")
    if opset < DYNAMO_MIN_OPSET and getattr(args, "exporter", "auto") == "dynamo":
        raise UserError(f"--opset: {opset} needs --exporter torchscript (the dynamo exporter writes opset {DYNAMO_MIN_OPSET} or newer)")
    args.func(args)


if __name__ == "__main__":
    main()
