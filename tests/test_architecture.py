"""The package's layers: no import cycles, and light imports stay light."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _modules() -> dict[str, str]:
    """Every module of the project: dotted name -> file."""
    out = {}
    for root, _, files in os.walk(os.path.join(SRC, "rail")):
        for name in files:
            if name.endswith(".py") and name != "_version.py":
                path = os.path.join(root, name)
                mod = os.path.relpath(path, SRC)[:-3].replace(os.sep, ".")
                out[mod[: -len(".__init__")] if mod.endswith(".__init__") else mod] = path
    return out


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (top level or inside functions)."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known and n != module}
    return found


def test_no_import_cycles():
    mods = _modules()
    graph = {m: _imports(m, p, set(mods)) for m, p in mods.items()}
    graph["rail.deepz"] = set()  # PEP 562 exports: resolved lazily, on attribute access only
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, stack + [dep])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def _loaded_after(statement: str, names: list[str]) -> dict[str, bool]:
    code = f"import sys\n{statement}\nprint([n in sys.modules for n in {names!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return dict(zip(names, eval(out.strip().splitlines()[-1])))  # noqa: S307 (our own output)


@pytest.mark.parametrize("statement", ["import rail.deepz.simulation", "import rail.deepz.inputs",
                                       "import rail.deepz.options"])
def test_simulation_and_inputs_import_without_torch_or_rail(statement):
    loaded = _loaded_after(statement, ["torch", "ceci", "rail.core.stage", "rail.estimation.algos.deepz"])
    assert not any(loaded.values()), loaded


def test_core_imports_without_the_rail_stages():
    loaded = _loaded_after("import rail.deepz.informing, rail.deepz.estimating, rail.deepz.transfer",
                           ["torch", "ceci", "rail.core.stage", "rail.estimation.algos.deepz"])
    assert loaded["torch"] and not loaded["ceci"] and not loaded["rail.estimation.algos.deepz"], loaded


def test_stages_are_exported_lazily():
    loaded = _loaded_after("import rail.deepz", ["torch", "rail.estimation.algos.deepz"])
    assert not any(loaded.values()), loaded
    from rail.deepz import DeepzEstimator, DeepzInformer, DeepzSimCreator  # noqa: F401

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        import rail.deepz

        rail.deepz.Nope  # noqa: B018


def test_rail_discovers_the_stages_without_importing_them_first():
    """RAIL's plugin discovery (``import_and_attach_all``, ``rail.interactive``) finds every stage."""
    code = ("import rail.stages\n"
            "rail.stages.import_and_attach_all(silent=True)\n"
            "import rail.interactive as ri\n"
            "found = sorted({n for n in rail.stages.__all__ if n.startswith('Deepz')})\n"
            "found.append(callable(ri.estimation.algos.deepz.deepz_informer))\n"
            "found.append(callable(ri.creation.engines.deepz_sims.deepz_sim_creator))\n"
            "print(found)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(out.strip().splitlines()[-1]) == [  # noqa: S307 (our own output)
        "DeepzEstimator", "DeepzEvaluator", "DeepzInformer", "DeepzSimCreator", "DeepzTargetInformer",
        "DeepzTargetTransferInformer", "DeepzTransferInformer", True, True]
