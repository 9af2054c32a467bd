"""The extension points: every registry entry has its config group option (and back), unknown names fail in
one line naming the setting, and the package graph has no cycle (``conf`` at the bottom, no import of ours)."""
from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conf.errors import UserError
from conf.registry import Registry
from conf.schemas import ProxySchema, group_options
from latency_lut.backends import BACKEND_CLASSES
from search.proxies import PROXIES
from search.strategies import STRATEGIES
from supernet.data import DATASETS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("conf", "supernet", "latency_lut", "search")


@pytest.mark.parametrize("registry,group", [(DATASETS, "data"), (STRATEGIES, "search"), (BACKEND_CLASSES, "device")])
def test_each_registry_entry_has_its_config_group_option(registry, group):
    assert tuple(sorted(registry)) == group_options(group)


def test_proxy_kinds_are_the_schema_choices():
    field = next(f for f in dataclasses.fields(ProxySchema) if f.name == "kind")
    assert sorted(PROXIES) == sorted(field.metadata["choices"])


def test_unknown_names_fail_naming_the_setting():
    for registry in (DATASETS, STRATEGIES, BACKEND_CLASSES, PROXIES):
        with pytest.raises(UserError) as err:
            registry.get_or_fail("no-such-entry")
        assert str(err.value).startswith(f"{registry.field}: 'no-such-entry' is not a ") and "\n" not in str(err.value)
    reg: Registry[int] = Registry("x.kind", "thing")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a", 2)
    assert dict(reg) == {"a": 1} and reg.get_or_fail("a") == 1


def _imports(path: Path) -> set[str]:
    """Our modules ``path`` imports, at any depth of the file (lazy imports count)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.split(".")[0] in PACKAGES}


def test_no_import_cycle_between_packages_or_modules():
    graph: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            graph[name] = {m for m in _imports(path)}
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        packages.setdefault(mod.split(".")[0], set()).update(d.split(".")[0] for d in deps if d.split(".")[0] != mod.split(".")[0])
    assert packages["conf"] == set(), "conf must import nothing of ours"
    order = ["conf", "supernet", "latency_lut", "search"]  # each may import only those before it
    for pkg, deps in packages.items():
        assert all(order.index(d) < order.index(pkg) for d in deps), (pkg, deps)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for d in graph.get(todo.pop(), ()):
                target = d if d in graph else d.rsplit(".", 1)[0]
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    cycles = [m for m in graph if m in reach(m)]
    assert not cycles, f"modules on an import cycle: {cycles}"


def test_importing_conf_loads_none_of_our_packages():
    code = "import sys, conf, conf.schemas, conf.registry; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('supernet', 'latency_lut', 'search')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("entry, argv, message", [
    ("search.app", ["eformer-search", "search=anneal"], "eformer-search: error: In 'eformer_search': Could not find 'search/anneal'"),
    ("search.app", ["eformer-search", "budget.latency_ms=-1"], "eformer-search: error: budget.latency_ms: -1.0 must be > 0"),
    ("search.app", ["eformer-search", "validate-proxy", "members=2"], "eformer-search validate-proxy: error: members: 2 must be >= 3"),
    ("latency_lut.app", ["eformer-lut", "build", "lut.repeats=0"], "eformer-lut: error: lut.repeats: Key 'repeats' not in"),
    ("supernet.train.app", ["eformer-train", "train.epochs=0"], "eformer-train: error: train.epochs: 0 must be >= 1"),
    ("search.pipeline", ["eformer-pipeline", "budgets=[s9]"], "eformer-pipeline: error: budgets: ['s9'] give a non-empty"),
    ("search.export_cli", ["eformer-export", "onnx", "--arch", "s7"], "eformer-export: error: arch 's7' is neither a preset"),
    ("search.export_cli", ["eformer-export", "onnx", "--arch", "s0", "--opset", "13"], "eformer-export: error: --opset: 13 is below"),
    ("search.export_cli", ["eformer-export", "arch", "--run", "r", "--exporter", "x"], "eformer-export arch: error: argument --exporter"),
    ("search.export_cli", ["eformer-export", "arch", "--run", "no-such-run", "--best"],
     "eformer-export: error: no-such-run/search.json: not found"),
])
def test_option_errors_are_reported_before_torch_loads(entry, argv, message, tmp_path):
    """A mistake in the options is a one-line error from the config checks alone: torch (and pandas, optuna,
    onnxruntime) load only once the job runs, so the user hears of a typo in a fraction of a second."""
    code = (f"import sys; sys.argv = {argv!r}; from {entry} import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "heavy = sorted(m for m in ('torch', 'pandas', 'optuna', 'onnxruntime') if m in sys.modules)\n"
            "print(code, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "2 []", (out.stdout, out.stderr[-800:])
    assert out.stderr.strip().startswith(message) and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_strategy_is_a_documented_abc_with_typed_settings():
    import optuna

    from conf.schemas import NSGA2SearchSchema, SlimmingSearchSchema
    from search.strategies import SamplerStrategy, Strategy

    with pytest.raises(TypeError):
        SamplerStrategy()  # make_sampler and run's sampler are the hooks a new strategy must give

    class Sobol(SamplerStrategy):  # a new sampler strategy is one class (and a registry entry)
        name, description = "sobol", "quasi-random members"

        def make_sampler(self, settings, seed):
            return optuna.samplers.QMCSampler(seed=seed)

    assert isinstance(Sobol().make_sampler(Sobol().settings(), 0), optuna.samplers.QMCSampler)
    assert isinstance(STRATEGIES["nsga2"].settings({"population_size": 12}), NSGA2SearchSchema)
    assert isinstance(STRATEGIES["slimming"].settings(), SlimmingSearchSchema)
    assert all(isinstance(s, Strategy) for s in STRATEGIES.values())
    walks_a_path = [n for n, s in STRATEGIES.items() if type(s).path_trials is not Strategy.path_trials]
    assert walks_a_path == ["slimming"]  # export plots its path: no strategy name is special-cased elsewhere


def test_config_groups_are_typed_by_their_base_schemas_and_study_digests_keep_their_form():
    import json

    from omegaconf import OmegaConf

    from conf import compose
    from conf.schemas import DeviceSchema, MesSchema, SearchSchema
    from search.app import mes_settings

    for option in group_options("search"):
        node = compose("eformer_search", [f"search={option}"]).search
        assert issubclass(OmegaConf.get_type(node), SearchSchema), option
    for option in group_options("device"):
        node = compose("eformer_lut", [f"device={option}"]).device
        assert issubclass(OmegaConf.get_type(node), DeviceSchema) and node.backend == option, option
    cfg = compose("eformer_search")
    assert OmegaConf.get_type(cfg.mes) is MesSchema
    untyped = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "eformer_search.yaml").mes)
    # what the untyped group gave: the settings digest, and so every default study name, stays the same
    assert json.dumps(mes_settings(cfg.mes), sort_keys=True) == json.dumps(untyped, sort_keys=True)
    assert mes_settings(compose("eformer_search", ["mes.score=50.5"]).mes)["score"] == 50.5
