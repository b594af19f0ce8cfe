"""The seams docs/architecture.md describes, held by tests: nothing branches on a task or backend name outside the
modules that own them; the import graph has no cycle; the artifact schema's task and backend parts equal the
registries; and a toy task and a toy backend plug in by registration alone."""
import ast
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mp_deploy import artifacts, backends, cli, tasks
from mp_deploy.backends.base import Backend
from mp_deploy.configs import Preset
from mp_deploy.tasks.depth import DepthTask

ROOT = Path(__file__).resolve().parents[1]
# the package's source trees and their module names (mp_deploy.kernels and mp_deploy.export live at the top)
TREES = {"mp_deploy": ROOT / "mp_deploy", "mp_deploy.kernels": ROOT / "kernels", "mp_deploy.export": ROOT / "export"}
TASK_NAMES = {"depth", "seg", "pose"}
BACKEND_NAMES = {"onnx", "aoti", "tensorrt", "torch-tensorrt", "openvino"}
# where a task's own name may be tested: its task module and its layer modules (model head, data readers)
TASK_HOMES = ("mp_deploy/tasks/", *(f"mp_deploy/{layer}/{t}.py" for layer in ("heads", "data") for t in TASK_NAMES))
BACKEND_HOMES = ("mp_deploy/backends/", "export/build_engine.py")


def sources():
    """(path relative to the checkout, AST) of every Python file of the package, the benchmarks and the tools."""
    files = [p for tree in TREES.values() for p in tree.rglob("*.py")]
    files += list((ROOT / "benchmarks").glob("*.py")) + list((ROOT / "tools").glob("*.py"))
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text(), str(p))) for p in sorted(files)]


def branches(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, what) of every comparison with one of `names`, every `in` over a literal holding one, every dict
    literal keyed by two or more of them (a dispatch table), every match case on one."""
    found = []

    def named(node):
        return isinstance(node, ast.Constant) and node.value in names

    def literal_names(node):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [e.value for e in node.elts if named(e)]
        return []

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for left, op, right in zip([node.left, *node.comparators], node.ops, node.comparators):
                if isinstance(op, (ast.Eq, ast.NotEq)) and (named(left) or named(right)):
                    found.append((node.lineno, f"compares with {(left if named(left) else right).value!r}"))
                if isinstance(op, (ast.In, ast.NotIn)) and (literal_names(right) or named(left)):
                    found.append((node.lineno, f"tests membership of {literal_names(right) or left.value}"))
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if k is not None and named(k)]
            if len(keys) >= 2:
                found.append((node.lineno, f"a table keyed by {keys}"))
        elif isinstance(node, ast.match_case) and isinstance(node.pattern, ast.MatchValue) and named(node.pattern.value):
            found.append((node.pattern.lineno, f"matches {node.pattern.value.value!r}"))
    return found


@pytest.mark.parametrize("names, homes, what", [(TASK_NAMES, TASK_HOMES, "task"),
                                                (BACKEND_NAMES, BACKEND_HOMES, "backend")])
def test_no_branch_on_a_name_outside_its_modules(names, homes, what):
    """Outside the task modules no code branches on a task name; outside the backend modules and the build code
    that drives them, none on a backend name (they ask mp_deploy.tasks / mp_deploy.backends)."""
    problems = [f"{path}:{line}: {why}" for path, tree in sources() if not path.startswith(homes)
                for line, why in branches(tree, names)]
    assert not problems, f"branches on a {what} name:\n" + "\n".join(problems)


def test_the_branch_finder_finds_branches():
    """The finder itself, on code that does branch (so the test above can fail)."""
    code = ast.parse("if task == 'pose': pass\nx = b in ('onnx', 'aoti')\nt = {'depth': 1, 'seg': 2}\n"
                     "match n:\n    case 'seg': pass\n")
    assert [line for line, _ in branches(code, TASK_NAMES)] == [1, 3, 5]
    assert [line for line, _ in branches(code, BACKEND_NAMES)] == [2]
    assert branches(ast.parse("s = {'depth': d}\nf(task='pose')\n"), TASK_NAMES) == []  # a field, an argument


# ------------------------------------------------------------------ the import graph

def module_name(path: Path) -> str:
    for prefix, tree in TREES.items():
        if tree in path.parents:
            parts = list(path.relative_to(tree).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            return ".".join([prefix, *parts])
    raise ValueError(path)


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, at module level or inside functions (`from X import y` counts
    X.y when that is a module, else X)."""
    modules = {module_name(p): p for tree in TREES.values() for p in tree.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                for a in node.names:
                    edges.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 60 and "mp_deploy.tasks.depth" in graph["mp_deploy.tasks"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# ------------------------------------------------------------------ the schema and the registries

def test_the_schema_file_states_the_registries():
    """The C++ library compiles the schema file in: its task and backend parts must be the registries' (and its
    pixel cap the one Python applies)."""
    from mp_deploy import images

    assert artifacts.file_parts() == artifacts.registry_parts()
    assert images.MAX_PIXELS == artifacts.SCHEMA["max_pixels"]


# ------------------------------------------------------------------ a toy task and a toy backend

class ToyTask(DepthTask):
    """Depth under another name, with its own preset and output: what a new task module would hold."""

    name, help, default_preset = "toy", "toy (a test's own task)", "toy-scene"
    presets = (Preset("toy-scene", "toy", max_depth=5.0, resize_scale=0, window=(64, 64), refine_steps=1),)
    output_name, output_kind = "toymap", "toy"
    run_output_names = ("toymap",)
    official = golden = None

    def describe_output(self, preset):
        return super().describe_output(preset) | {"name": self.output_name, "kind": self.output_kind}

    def run_outputs(self, raw, input_hw):
        return {"toymap": raw}

    def model_class(self):
        from mp_deploy.heads.depth import MetaPromptsDepth

        return type("ToyModel", (MetaPromptsDepth,), {"task": "toy"})


class ToyBackend(Backend):
    """Weights in a torch file, the contract beside them in it, run eagerly: what a new backend module would
    hold."""

    name, label, suffix = "toyfile", "toy file", ".toy"
    auto = ""

    def write(self, product, network, path, options, contract):
        from mp_deploy.contract import contract_json
        from mp_deploy.files import atomic_write

        state = {k: v.float() for k, v in network.model.state_dict().items()}
        atomic_write(path, lambda tmp: torch.save({"state": state, "contract": contract_json(contract)}, tmp))
        return []

    def read_contract(self, path):
        return torch.load(path, weights_only=True)["contract"]

    def load(self, path, meta, device, threads=1):
        model = tasks.build_model(meta["task"], preset=tasks.preset_from_dict(meta["preset"]), size=meta["size"],
                                  init=False)
        model.load_state_dict(torch.load(path, weights_only=True)["state"], assign=True)
        model = model.eval()
        return lambda x: model(x.float())


def test_a_toy_task_and_backend_plug_in_by_registration(tmp_path):
    """Registered here and nowhere else, they appear in `mp-deploy build --help`, the registries' listings and
    the schema; build makes a toy artifact with the toy backend, the runtime loads and runs it, and a sidecar
    naming a task or backend nobody registered is still refused."""
    from mp_deploy.engine import Engine
    from mp_deploy.export.build_engine import BuildSpec, build

    with tasks.registered(ToyTask()), backends.registered(ToyBackend()):
        parser, _ = cli.command_parser("build")
        usage = parser.format_help()
        assert "toy" in parser._option_string_actions["--task"].choices and "toy (a test's own task)" in usage
        assert "toyfile" in parser._option_string_actions["--backend"].choices
        assert "toy" in tasks.names() and "toy-scene" in tasks.PRESETS and "toyfile" in backends.names()
        assert artifacts.registry_parts()["output_names"]["toy"] == "toymap"

        [artifact] = build(BuildSpec(task="toy", backend="toyfile", model_size="tiny", output=str(tmp_path), runs=1))
        assert artifact.ok and artifact.path.name == "toy-toy-scene-tiny-fp32.toy", artifact
        engine = Engine.load(artifact.path)  # the schema check, the embedded contract, the toy runner
        out = engine.run(np.zeros((64, 64, 3), np.uint8))
        assert list(out) == ["toymap"] and out["toymap"].shape == (1, 1, 64, 64)

        meta = json.loads(artifacts.sidecar_path(artifact.path).read_text())
        for field, value in (("task", "banana"), ("backend", "banana")):
            with pytest.raises(artifacts.ArtifactError, match="banana"):
                artifacts.check_sidecar(dict(meta, **{field: value}), "edited")
    assert "toy" not in tasks.names() and "toyfile" not in backends.names()
    with pytest.raises(artifacts.ArtifactError, match="toy"):  # unregistered: refused again
        artifacts.check_sidecar(meta, "after")
