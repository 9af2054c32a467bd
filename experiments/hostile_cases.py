"""The cases of the fault and hostile-input corpus (:mod:`experiments.hostile_corpus` runs and judges them):
each a command line, a setup that lays out its files, and what the judge may accept."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

MARKER = "PWNED_MARKER"


@dataclass
class Case:
    cls: str
    name: str
    argv: list[str]
    setup: Callable[[Path, Path], None] = lambda cwd, assets: None
    hydra_message: bool = False  # Hydra refuses it: one line (composition), or argparse's usage block (its flags)
    inputs: list[str] = field(default_factory=list)  # files (relative to cwd) that must not change
    keeps_work: bool = False  # a real run that failed late: the work it did stays (resumable), said in the message
    unprivileged: bool = False  # run as the user nobody (root reads every file): for unreadable-file cases


class Evil:
    """A pickle that creates the marker file when unpickled with weights_only=False."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def evil_pickle(path: Path, marker: Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump({"state": Evil(str(marker))}, fh)


def build_assets(d: Path) -> None:
    """A tiny supernet, a tiny LUT and a finished tiny search, made with the project's own APIs."""
    from conf import compose
    from experiments.kill_test import make_assets
    from search.app import run_search

    supernet, lut = make_assets(d)
    run_search(compose("eformer_search", [f"supernet={supernet}", f"lut_file={lut}", f"run_dir={d / 'run'}",
                                          "proxy.kind=analytic", "search=random", "search.n_trials=4", "storage=sqlite",
                                          "progress=false", "mes.units.latency_ms=1.0", "budget=none"]))


def lut_with(assets: Path, change: Callable) -> Callable[[Path, Path], None]:
    def setup(cwd: Path, _: Path) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(assets / "tiny.parquet")
        df = table.to_pandas()
        meta = json.loads(table.schema.metadata[b"eformer_lut"])
        df, meta = change(df, meta)
        import pyarrow as pa

        out = pa.Table.from_pandas(df, preserve_index=False)
        out = out.replace_schema_metadata({**(out.schema.metadata or {}), b"eformer_lut": json.dumps(meta).encode()})
        pq.write_table(out, cwd / "bad.parquet")
    return setup


def write(name: str, text: str | bytes) -> Callable[[Path, Path], None]:
    def setup(cwd: Path, _: Path) -> None:
        (cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (cwd / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def chain(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(cwd: Path, assets: Path) -> None:
        for s in setups:
            s(cwd, assets)
    return setup


def cases(assets: Path) -> list[Case]:
    sn, lut = str(assets / "supernet.pt"), str(assets / "tiny.parquet")
    search = ["eformer-search", f"supernet={sn}", f"lut_file={lut}", "run_dir=out", "proxy.kind=analytic", "progress=false",
              "mes.units.latency_ms=1.0"]
    lut_build = ["eformer-lut", "build", "space=tiny", "image_size=64", "num_classes=10", "lut=quick", "lut.progress=false", "out=out/t.parquet"]
    train = ["eformer-train", "data=digits", "space=tiny", "run_dir=out", "train.progress=false"]
    out: list[Case] = []
    add = out.append

    # ---- typed overrides (Hydra composition or our declared constraints)
    for app, base, overrides in (
        ("search", search, ["search=nsga2 search.n_trials=abc", "worker=abc", "storage.grace_s=abc", "seed=1.5", "threads=x",
                            "search=random search.n_trials=[1]", "proxy.calib_images=abc", "budget.latency_ms=fast",
                            "search.lrr=1", "storage.heartbeat_s=abc"]),
        ("train", train, ["train.epochs=abc", "train.lr=abc", "train.batch_size=1.5", "data.image_size=abc", "train.progress=maybe",
                          "train.eval_presets=abc", "train.unknown=1", "data.calib_size=abc"]),
        ("lut", lut_build, ["lut.limit=abc", "device.threads=abc", "image_size=abc", "lut.protocol.repeats=abc", "num_classes=1e3x",
                            "lut.interleave=abc"]),
    ):
        for o in overrides:
            add(Case("typed overrides (wrong type, unknown key)", f"{app}: {o}", [*base, *o.split()], hydra_message=True))
    for app, base, overrides in (
        ("search", search, ["search=nsga2 search.n_trials=-5", "search=nsga2 search.n_trials=0", "search=nsga2 search.population_size=0",
                            "threads=-1", "worker=-1", "storage.grace_s=0", "storage.heartbeat_s=20", "proxy.val_images=0",
                            "search.max_steps=0", "search.score_by=acc", "search.expansion_scope=all", "search.actions=[]",
                            "budget.latency_ms=-3", "budget.params_m=0", "budget.preset=s9", "storage.kind=redis", "search.moves_per_step=0"]),
        ("train", train, ["train.batch_size=0", "train.lr=-1", "train.epochs=0", "train.precision=fp8", "data.image_size=33",
                          "data.image_size=4096", "train.label_smoothing=2", "train.num_random=-1", "train.checkpoint_every=0",
                          "data.calib_size=1", "data.hflip=3", "train.eval_presets=[s9]", "train.threads=0", "train.lr=nan"]),
        ("lut", lut_build, ["lut.limit=-3", "lut.limit=0", "lut.protocol.repeats=0", "lut.protocol.warmup=-1", "image_size=100",
                            "image_size=0", "lut.statistic=max", "device.opset=99", "device.threads=0", "lut.protocol.cache=hot",
                            "batch_size=0", "num_classes=0", "device.graph_optimization=max"]),
    ):
        for o in overrides:
            add(Case("out-of-range values", f"{app}: {o}", [*base, *o.split()]))

    # ---- damaged LUT files
    import numpy as np

    def drop(col):
        return lambda df, m: (df.drop(columns=[col]), m)

    def setcol(col, val):
        def f(df, m):
            df = df.copy()
            df.loc[df.index[0], col] = val
            return df, m
        return f

    def meta(change):
        return lambda df, m: (df, change(dict(m)))

    lut_changes = {
        "no q25_ms column": drop("q25_ms"), "no signature column": drop("kind"), "NaN latency": setcol("q25_ms", np.nan),
        "negative latency": setcol("q25_ms", -1.0), "inf latency": setcol("q25_ms", np.inf), "NaN in signature column": setcol("in_width", np.nan),
        "metadata without space_hash": meta(lambda m: {k: v for k, v in m.items() if k != "space_hash"}),
        "non-numeric calibration": meta(lambda m: {**m, "calibration": {"a": "x", "b": 0}}), "unknown statistic": meta(lambda m: {**m, "statistic": "max"}),
        "other image size": meta(lambda m: {**m, "image_size": 96}), "other space hash": meta(lambda m: {**m, "space_hash": "0" * 12}),
        "NaN drift anchor": setcol("anchor_ms", np.nan), "negative drift anchor": setcol("anchor_ms", -2.0),
        "calibration weight of an unknown feature": meta(lambda m: {**m, "calibration": {"a": 1.0, "b": 0.0, "weights": {"bogus": 1.0}}}),
        "calibration weights not a mapping": meta(lambda m: {**m, "calibration": {"a": 1.0, "b": 0.0, "weights": [1, 2]}}),
        "NaN calibration weight": meta(lambda m: {**m, "calibration": {"a": 1.0, "b": 0.0, "weights": {"sum": float("nan")}}}),
        "unsupported LUT format": meta(lambda m: {**m, "format": "eformer-lut/9"}),
    }
    for label, change in lut_changes.items():
        add(Case("damaged LUT files", f"predict: {label}", ["eformer-lut", "predict", "space=tiny", "arch_file=s0", "out=bad.parquet"],
                 lut_with(assets, change), inputs=["bad.parquet"]))
        add(Case("damaged LUT files", f"search: {label}", [*search, "lut_file=bad.parquet"], lut_with(assets, change), inputs=["bad.parquet"]))
    for label, data in (("random bytes", os.urandom(4096)), ("empty file", b""), ("CSV named .parquet", b"a,b\n1,2\n")):
        add(Case("damaged LUT files", f"show: {label}", ["eformer-lut", "show", "out=bad.parquet"], write("bad.parquet", data), inputs=["bad.parquet"]))
    add(Case("damaged LUT files", "metadata is a list", ["eformer-lut", "show", "out=bad.parquet"],
             lut_with(assets, lambda df, m: (df, [1, 2])), inputs=["bad.parquet"]))

    # ---- architecture YAML files (data, not code)
    good = (Path(__file__).resolve().parents[1] / "supernet" / "presets" / "s0.yaml").read_text()
    arch_cases = {
        "path traversal name": good.replace("name: s0", "name: ../../../x"), "5000-char name": good.replace("name: s0", "name: " + "a" * 5000),
        "interpolation": good.replace("name: s0", "name: ${oc.env:HOME}"), "width 1e9": good.replace("width: 32", "width: 1000000000"),
        "negative expansion": good.replace("expansion: 4", "expansion: -4", 1), "unknown block type": good.replace("type: ffn", "type: conv", 1),
        "billion laughs": "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                          "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "a list": "- 1\n- 2\n", "a python tag": "name: !!python/object/apply:os.system ['touch PWNED_MARKER']\n",
        "binary": os.urandom(512), "2 MiB file": "# " + "x" * (2 << 20) + "\n" + good, "image size 33": good.replace("image_size: 224", "image_size: 33"),
        "string width": good.replace("width: 32", "width: wide"), "no stages": "name: x\nimage_size: 224\n", "1000 stages": good + "".join(
            "  - width: 32\n    blocks: [{type: ffn, expansion: 4}]\n" for _ in range(1000)),
    }
    for label, text in arch_cases.items():
        add(Case("architecture files", f"predict: {label}", ["eformer-lut", "predict", "space=tiny", f"out={lut}", "arch_file=a.yaml"],
                 write("a.yaml", text), inputs=["a.yaml"]))
    for label in ("path traversal name", "interpolation", "billion laughs", "width 1e9", "a python tag"):
        add(Case("architecture files", f"export onnx: {label}", ["eformer-export", "onnx", "--arch", "a.yaml", "--out", "out/x.onnx"],
                 write("a.yaml", arch_cases[label]), inputs=["a.yaml"]))

    # ---- pickles and checkpoints (no code execution)
    def evil(name):
        return lambda cwd, _: ((cwd / name).parent.mkdir(parents=True, exist_ok=True), evil_pickle(cwd / name, cwd / MARKER))

    add(Case("pickles and checkpoints", "malicious supernet=", [*search, "supernet=evil.pt"], evil("evil.pt")))
    add(Case("pickles and checkpoints", "malicious --weights", ["eformer-export", "onnx", "--arch", "s0", "--weights", "evil.pt",
                                                                  "--out", "out/x.onnx"], evil("evil.pt")))
    add(Case("pickles and checkpoints", "malicious convert input", ["eformer-export", "convert", "--arch", "s0", "--src", "evil.pt", "--out", "out/x.pt"],
             evil("evil.pt")))
    add(Case("pickles and checkpoints", "malicious checkpoint.pt in a run dir", [*train, "run_dir=r"], evil("r/checkpoint.pt")))
    add(Case("pickles and checkpoints", "malicious finetune weights", [*train, "finetune.arch=s0", "finetune.weights=evil.pt"], evil("evil.pt")))
    add(Case("pickles and checkpoints", "malicious supernet named in search.json",
             ["eformer-export", "arch", "--run", "r", "--best", "--out", "out"],
             chain(evil("evil.pt"), lambda cwd, a: ((cwd / "r").mkdir(exist_ok=True), (cwd / "r" / "search.json").write_text(
                 (a / "run" / "search.json").read_text().replace(json.dumps(str((a / "supernet.pt").resolve())),
                                                                  json.dumps(str((cwd / "evil.pt").resolve()))))))))
    for label, data in (("random bytes", os.urandom(2048)), ("empty", b""), ("JSON", b'{"a": 1}')):
        add(Case("pickles and checkpoints", f"supernet= {label}", [*search, "supernet=bad.pt"], write("bad.pt", data)))
        add(Case("pickles and checkpoints", f"--weights {label}", ["eformer-export", "onnx", "--arch", "s0", "--weights", "bad.pt",
                                                                      "--out", "out/x.onnx"], write("bad.pt", data)))

    def wrong_shapes(cwd: Path, _: Path) -> None:
        torch.save({"stem.0.weight": torch.zeros(3, 3)}, cwd / "w.pt")

    add(Case("pickles and checkpoints", "state dict with wrong keys", ["eformer-export", "onnx", "--arch", "s0", "--weights", "w.pt",
                                                                         "--out", "out/x.onnx"], wrong_shapes))

    # ---- unusable paths
    def weights(cwd: Path, _: Path) -> None:
        from supernet.arch import ArchConfig
        from supernet.model import build_model

        torch.save(build_model(ArchConfig.preset("s0").replace(image_size=64, num_classes=10)).state_dict(), cwd / "w.pt")

    onnx = ["eformer-export", "onnx", "--arch", "s0"]
    add(Case("unusable paths", "--out is a directory", [*onnx, "--out", "d"], lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("unusable paths", "--out under a regular file", [*onnx, "--out", "f/x.onnx"], write("f", "x"), inputs=["f"]))
    add(Case("unusable paths", "--out equals --weights", [*onnx, "--image-size", "64", "--weights", "w.pt", "--out", "w.pt"], weights, inputs=["w.pt"]))
    add(Case("unusable paths", "--opset 99", [*onnx, "--opset", "99", "--out", "out/x.onnx"]))
    add(Case("unusable paths", "--opset abc", [*onnx, "--opset", "abc", "--out", "out/x.onnx"]))
    add(Case("unusable paths", "missing --weights", [*onnx, "--weights", "nope.pt", "--out", "out/x.onnx"]))
    add(Case("unusable paths", "LUT out under a regular file", [*lut_build[:-1], "out=f/t.parquet"], write("f", "x"), inputs=["f"]))
    add(Case("unusable paths", "LUT out is a directory", [*lut_build[:-1], "out=d"], lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("unusable paths", "supernet= a directory", [*search, "supernet=d"], lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("unusable paths", "lut_file missing", [*search, "lut_file=nope.parquet"]))
    add(Case("unusable paths", "export arch to a file", ["eformer-export", "arch", "--run", str(assets / "run"), "--best", "--out", "f"],
             write("f", "x"), inputs=["f"]))

    # ---- damaged run directories
    rec = json.loads((assets / "run" / "search.json").read_text())

    def run_dir(record, extra=None):
        def setup(cwd: Path, _: Path) -> None:
            (cwd / "r").mkdir()
            (cwd / "r" / "search.json").write_text(record if isinstance(record, str) else json.dumps(record))
            if extra:
                extra(cwd)
        return setup

    export = ["eformer-export", "arch", "--run", "r", "--best", "--out", "out"]
    add(Case("damaged run directories", "search.json without study_name", export, run_dir({k: v for k, v in rec.items() if k != "study_name"})))
    add(Case("damaged run directories", "search.json not JSON", export, run_dir("{not json")))
    add(Case("damaged run directories", "search.json a list", export, run_dir("[1, 2]")))
    add(Case("damaged run directories", "study.db random bytes", export,
             run_dir({**rec, "storage": "sqlite:///STUDY"}, lambda cwd: None)))
    cases_db = out[-1]
    cases_db.setup = lambda cwd, _: ((cwd / "r").mkdir(), (cwd / "r" / "study.db").write_bytes(os.urandom(8192)),
                                     (cwd / "r" / "search.json").write_text(json.dumps({**rec, "storage": f"sqlite:///{cwd / 'r' / 'study.db'}"})))
    add(Case("damaged run directories", "study missing from storage", export, lambda cwd, _: (
        (cwd / "r").mkdir(), (cwd / "r" / "search.json").write_text(json.dumps({**rec, "study_name": "nope"})))))
    add(Case("damaged run directories", "--trial not in study", ["eformer-export", "arch", "--run", str(assets / "run"), "--trial", "999",
                                                                "--out", "out"]))
    add(Case("damaged run directories", "not a run directory", export, lambda cwd, _: (cwd / "r").mkdir()))
    add(Case("damaged run directories", "journal random bytes", [*search, "storage=journal", "search=random", "search.n_trials=2"],
             write("out/study.journal", os.urandom(4096))))
    add(Case("damaged run directories", "study.db random bytes (search)", [*search, "search=random", "search.n_trials=2"],
             write("out/study.db", os.urandom(8192))))
    add(Case("damaged run directories", "training checkpoint random bytes", [*train, "run_dir=r"], write("r/checkpoint.pt", os.urandom(4096))))

    # ---- data
    def imagefolder(n_calib: int) -> Callable[[Path, Path], None]:
        def setup(cwd: Path, _: Path) -> None:
            from PIL import Image

            for split, n in (("train", 4), ("val", n_calib)):
                for c in ("a", "b"):
                    d = cwd / "img" / split / c
                    d.mkdir(parents=True)
                    for i in range(n):
                        Image.new("RGB", (40, 40), (i * 9 % 255, 0, 0)).save(d / f"{i}.png")
        return setup

    add(Case("data", "imagefolder with 1 calibration image", [*train, "data=imagefolder", "data.root=img", "data.calib_size=1",
                                                              "data.image_size=32"], imagefolder(1)))
    add(Case("data", "imagefolder too small for calibration", [*train, "data=imagefolder", "data.root=img", "data.calib_size=10",
                                                               "data.image_size=32", "data.num_workers=0"], imagefolder(2)))
    add(Case("data", "imagefolder root missing", [*train, "data=imagefolder", "data.root=nope"]))
    add(Case("data", "cifar10 without root", [*train, "data=cifar10"]))
    add(Case("data", "fashion root with a truncated file", [*train, "data=fashion", "data.root=fm"], chain(
        write("fm/train-images-idx3-ubyte", b"\x00\x00\x08\x03" + b"\x00" * 20), write("fm/train-labels-idx1-ubyte", b"\x00"),
        write("fm/t10k-images-idx3-ubyte", b""), write("fm/t10k-labels-idx1-ubyte", b""))))
    add(Case("data", "digits with a root", [*train, "data.root=x"]))

    # ---- device commands
    lut_cmd = [*lut_build, "device=command"]
    for label, over in (
        ("template without {onnx}", ["device.command=echo"]), ("unknown placeholder", ["device.command='run {onnx} {model}'"]),
        ("unbalanced brace", ["device.command='run {onnx'"]), ("bad regex", ["device.regex='(['"]), ("regex without group", ["device.regex=ms"]),
        ("command fails", ["device.command='false {onnx}'"]), ("prints no latency", ["device.command='echo {onnx}'"]),
        ("prints a non-number", ["device.command='echo median_ms=abc {onnx}'", "device.regex='median_ms=(\\S+)'"]),
        ("command_file missing", ["device.command_file=nope.cmd"]), ("timeout", ["device.command='sleep 5; echo {onnx}'", "device.timeout_s=1"]),
    ):
        add(Case("device commands", label, [*lut_cmd, *over]))
    add(Case("device commands", "command_file binary", [*lut_cmd, "device.command_file=c.cmd"], write("c.cmd", os.urandom(300))))
    add(Case("device commands", "GPU provider on a CPU build", [*lut_build, "device.providers=[CUDAExecutionProvider]"]))

    # ---- command-line flags (Hydra's own, on every app)
    pipeline = ["eformer-pipeline", "work_dir=out", "progress=false"]
    for label, argv in (
        ("search: -m with --cfg", [*search, "-m", "--cfg", "job", "budget=s0,s1"]),
        ("lut: -m with --cfg", ["eformer-lut", "-m", "build", "--cfg", "job"]),
        ("train: -m with --cfg", [*train, "-m", "--cfg", "job", "train.lr=1,2"]),
        ("pipeline: -m with --cfg", [*pipeline, "--cfg", "job", "-m"]),
        ("validate-proxy: -m with --cfg", ["eformer-search", "validate-proxy", "-m", "--cfg", "job", "members=3"]),
        ("search: --cfg bogus", [*search, "--cfg", "bogus"]),
        ("lut: --info bogus", ["eformer-lut", "--info", "bogus"]),
        ("search: --shell-completion alone", [*search, "--shell-completion"]),
        ("search: another app's config", [*search, "--config-name", "eformer_lut"]),
        ("train: another app's config", [*train, "-cn", "eformer_search"]),
        ("pipeline: another app's config", [*pipeline, "-cn", "eformer_train"]),
        ("lut: hydra.run.dir that cannot exist", [*lut_build, "hydra.run.dir=/proc/nope/x"]),
        ("search: hydra.sweep.dir under a file", [*search, "-m", "budget=s0,s1", "hydra.sweep.dir=f/x"]),
    ):
        add(Case("command-line flags", label, argv, write("f", b"x") if "under a file" in label else (lambda cwd, a: None),
                 hydra_message=True))

    # ---- storages
    add(Case("storages", "url without a URL", [*search, "storage=url"]))
    add(Case("storages", "unreachable PostgreSQL", [*search, "storage=url", "storage.url='postgresql+psycopg://u:p@127.0.0.1:1/x'"]))
    add(Case("storages", "unknown SQLAlchemy dialect", [*search, "storage=url", "storage.url='nosuchdb://x'"]))
    add(Case("storages", "slimming that cannot meet its budget", [*search, "search.max_steps=1", "budget=none",
                                                                  "budget.params_m=0.2"], keeps_work=True))
    # ---- users' files read through one guard (issue 22)
    s0_yaml = __import__("supernet.arch", fromlist=["ArchConfig"]).ArchConfig.preset("s0").to_yaml()
    predict = ["eformer-lut", "predict", "space=tiny", f"out={lut}"]
    add(Case("guarded reads", "arch_file a directory", [*predict, "arch_file=d"], lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("guarded reads", "arch_file not UTF-8", [*predict, "arch_file=a.yaml"], write("a.yaml", b"\xff\xfe\x00name: s0"),
             inputs=["a.yaml"]))
    add(Case("guarded reads", "arch_file over 1 MiB", [*predict, "arch_file=a.yaml"], write("a.yaml", "#" * (1 << 21)), inputs=["a.yaml"]))
    add(Case("guarded reads", "arch_file unreadable (another user)", [*predict, "arch_file=a.yaml"],
             chain(write("a.yaml", s0_yaml), lambda cwd, _: (cwd / "a.yaml").chmod(0)), unprivileged=True))
    add(Case("guarded reads", "--weights unreadable (another user)", ["eformer-export", "onnx", "--arch", "s0", "--weights", "w.pt",
                                                                     "--out", "out/x.onnx"],
             chain(write("w.pt", b"x"), lambda cwd, _: (cwd / "w.pt").chmod(0)), unprivileged=True))
    add(Case("guarded reads", "--weights a directory", ["eformer-export", "onnx", "--arch", "s0", "--weights", "d", "--out", "out/x.onnx"],
             lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("guarded reads", "lut_file a directory", [*search, "lut_file=d"], lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("guarded reads", "lut_file unreadable (another user)", [*search, "lut_file=l.parquet"],
             chain(lambda cwd, a: shutil.copy(a / "tiny.parquet", cwd / "l.parquet"), lambda cwd, _: (cwd / "l.parquet").chmod(0)),
             unprivileged=True))
    add(Case("guarded reads", "command_file a directory", [*lut_build, "device=command", "device.command_file=d"],
             lambda cwd, _: (cwd / "d").mkdir()))
    add(Case("guarded reads", "search.json a directory", ["eformer-export", "arch", "--run", "r", "--best"],
             lambda cwd, _: (cwd / "r" / "search.json").mkdir(parents=True)))

    # ---- outputs that fail leave nothing (issue 22)
    def nan_weights(cwd: Path, _: Path) -> None:
        from supernet.arch import ArchConfig
        from supernet.model import build_model

        model = build_model(ArchConfig.preset("s0").replace(image_size=64, num_classes=10))
        sd = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        torch.save({"model": sd, "arch": model.arch.to_dict()}, cwd / "nan.pt")
    add(Case("failed outputs", "ONNX of NaN weights", ["eformer-export", "onnx", "--weights", "nan.pt", "--out", "x.onnx"], nan_weights,
             inputs=["nan.pt"]))
    for size in ("0", "-32", "33", "4096"):
        add(Case("failed outputs", f"--image-size {size}", ["eformer-export", "onnx", "--arch", "s0", "--image-size", size, "--out", "x.onnx"]))
    for label, script in (("prints median_ms=abc", "print('median_ms=abc')"), ("prints nan", "print('median_ms=nan')"),
                          ("prints -3", "print('median_ms=-3')"), ("times out", "import time; time.sleep(30)")):
        add(Case("failed outputs", f"LUT build whose command {label} (no lock left)",
                 [*lut_build, "device=command", "device.command_file=c.cmd", "device.timeout_s=2"],
                 write("c.cmd", f"{sys.executable} -c \"{script}\" {{onnx}}"), inputs=["c.cmd"]))

    # ---- storage strings (issue 22)
    for label, over in (("url not a URL", ["storage=url", "storage.url=notaurl"]), ("url empty", ["storage=url", "storage.url=''"]),
                        ("url a bare path", ["storage=url", "storage.url=/tmp/x.db"]),
                        ("journal file a URL", ["storage=journal", "storage.file='postgresql://h/db'"]),
                        ("sqlite file empty", ["storage=sqlite", "storage.file=''"])):
        add(Case("storages", label, [*search, "search=random", "search.n_trials=2", *over]))

    # ---- 224-px image folders (issue 18)
    def jpeg_folder(damage: str) -> Callable[[Path, Path], None]:
        def setup(cwd: Path, _: Path) -> None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from helpers import write_image_folder

            root = write_image_folder(cwd / "img", classes=2, train=60, val=4, size=(120, 100))
            first = sorted((root / "train" / "n00000000").iterdir())[0]
            if damage == "undecodable":
                for f in (root / "train" / "n00000000").iterdir():
                    f.write_bytes(b"\xff\xd8 not a jpeg")
            elif damage == "truncated":
                for f in (root / "train" / "n00000000").iterdir():
                    f.write_bytes(f.read_bytes()[:200])
            elif damage == "empty file":
                for f in (root / "train" / "n00000000").iterdir():
                    f.write_bytes(b"")
            elif damage == "text named .jpg":
                for f in (root / "train" / "n00000000").iterdir():
                    f.write_text("hello")
            elif damage == "empty class":
                for f in (root / "train" / "n00000001").iterdir():
                    f.unlink()
            elif damage == "val class not in train":
                (root / "val" / "extra").mkdir()
                shutil.copy(first, root / "val" / "extra" / "a.jpg")
            elif damage == "no classes":
                shutil.rmtree(root / "train")
                (root / "train").mkdir()
            elif damage == "unreadable":
                for f in (root / "train" / "n00000000").iterdir():
                    f.chmod(0)
        return setup

    folder = [*train, "data=imagefolder", "data.root=img", "data.image_size=224", "data.calib_size=10", "data.holdout=0",
              "train.batch_size=8", "train.eval_presets=[]"]
    for damage in ("undecodable", "truncated", "empty file", "text named .jpg", "empty class", "val class not in train", "no classes"):
        add(Case("image folders (224 px)", damage, folder, jpeg_folder(damage)))
    add(Case("image folders (224 px)", "unreadable images (another user)", folder, jpeg_folder("unreadable"), unprivileged=True))
    add(Case("guarded reads", "run_dir in a directory the user cannot write (another user)", [*train, "run_dir=ro/out"],
             lambda cwd, _: (cwd / "ro").mkdir(mode=0o755), unprivileged=True))
    add(Case("image folders (224 px)", "holdout over half of train", [*folder[:-2], "data.holdout=100"], jpeg_folder("none")))
    add(Case("image folders (224 px)", "holdout negative", [*folder, "data.holdout=-1"], jpeg_folder("none")))
    add(Case("image folders (224 px)", "num_workers negative", [*folder, "data.num_workers=-2"], jpeg_folder("none")))

    # ---- compute devices and the proxy's memory (issue 18)
    for label, argv in (("train on cuda", [*train, "compute_device=cuda"]), ("search on cuda:0", [*search, "compute_device=cuda:0"]),
                        ("search on gpu", [*search, "compute_device=gpu"]), ("search on cuda:x", [*search, "compute_device=cuda:x"]),
                        ("pipeline on cuda", ["eformer-pipeline", "work_dir=out", "compute_device=cuda"]),
                        ("validate-proxy on cuda", ["eformer-search", "validate-proxy", f"supernet={sn}", f"lut_file={lut}",
                                                    "compute_device=cuda", "run_dir=out"]),
                        ("proxy fp16 on the CPU", [*search[:-2], "proxy.kind=supernet", "proxy.precision=fp16", "compute_device=cpu"]),
                        ("proxy memory 0", [*search, "proxy.memory_mb=0"]),
                        ("proxy memory below one batch", [*search[:-2], "proxy.kind=supernet", "proxy.memory_mb=0.01", "proxy.cache=null"]),
                        ("proxy batch of 1", [*search, "proxy.batch_size=1"])):
        add(Case("compute devices", label, argv))

    # ---- pipeline stage overrides fail before any stage (issue 19)
    for label, over in (("unknown key", 'slimming_overrides=["search.nosuch=1"]'), ("out of range", 'train_overrides=["train.lr=-1"]'),
                        ("zero trials", 'nsga2_overrides=["search.n_trials=0"]'), ("unknown group option", 'lut_overrides=["lut=nosuch"]'),
                        ("wrong type", 'train_overrides=["train.epochs=abc"]')):
        add(Case("pipeline overrides", label, ["eformer-pipeline", "work_dir=out", over]))
    return out
