"""Layering of the code base, checked on the source (ast) and at run time (a fresh interpreter).

    layer 0  masa (package), masa.configbase, masa.algo            torch + stdlib only
    layer 1  masa.storage, masa.telemetry, masa.schemas             the middle, in four
    layer 2  masa.engines, masa.train, masa.data, masa.toy          ordered levels (1-4)
    layer 3  masa.config, masa.clusterconfig, masa.presets
    layer 4  masa.runner                                            what the steps run
    layer 5  masa.steps                                             one module per pipeline step
    layer 6  masa.components  (folder components/)
    layer 7  masa.pipeline    (folder pipeline/)
    layer 8  masa.cli, masa.commands

A module may import its own layer and those below, never above. A new top-level module or package under
masa/ must be given a layer in LAYERS below (the test fails naming it), so the map stays the design.
No two modules import each other, directly or round a longer loop, at module level or inside functions
(`_cycles`): a package's `__init__` re-exporting its submodules is the one allowed direction, so a
submodule imports its siblings, never names from its own package's `__init__`.
"""

from __future__ import annotations

import ast
import json
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> installed package name (pyproject maps components/ and pipeline/ under masa).
SOURCE_ROOTS = {"masa": "masa", "components": "masa.components", "pipeline": "masa.pipeline"}
LAYERS = {
    "masa": 0, "masa.configbase": 0, "masa.algo": 0,
    "masa.storage": 1, "masa.telemetry": 1, "masa.schemas": 1,
    "masa.engines": 2, "masa.train": 2, "masa.toy": 2, "masa.data": 2,
    "masa.config": 3, "masa.clusterconfig": 3, "masa.presets": 3,
    "masa.runner": 4,
    "masa.steps": 5,
    "masa.components": 6,
    "masa.pipeline": 7,
    "masa.cli": 8, "masa.commands": 8,
}
# Heavy or I/O libraries the pure algorithm layer must not pull in (checked at run time too).
ALGO_FORBIDDEN = {"vllm", "deepspeed", "boto3", "botocore", "kfp", "transformers", "numpy", "pandas", "pyarrow",
                  "datasets", "ray"}
ALGO_ALLOWED_TOP = set(sys.stdlib_module_names) | {"torch", "masa"}


def _source_modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Installed module name -> (file, is_package) for every .py file of masa/, components/, pipeline/."""
    out = {}
    for folder, pkg in SOURCE_ROOTS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            is_pkg = parts[-1] == "__init__"
            name = ".".join((pkg, *(parts[:-1] if is_pkg else parts)))
            out[name] = (path, is_pkg)
    return out


def _imports(path: Path, module: str, is_pkg: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, relative ones resolved; `from a import b`
    yields both a and a.b (b may be a submodule), anywhere in the file (function-level imports included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module, is_pkg)
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return found


def _from_base(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    """The absolute module of `from BASE import ...` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if is_pkg else module.rpartition(".")[0]
    base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base_parts + ([node.module] if node.module else []))


def _layer(module: str) -> int | None:
    """Layer of a masa.* module: the longest prefix in LAYERS ("masa" itself only as an exact match)."""
    parts = module.split(".")
    for i in range(len(parts), 1, -1):
        if ".".join(parts[:i]) in LAYERS:
            return LAYERS[".".join(parts[:i])]
    return 0 if module == "masa" else None


def _unknown_layers(root: Path) -> list[str]:
    return sorted(m for m in _source_modules(root) if _layer(m) is None)


def _algo_violations(root: Path) -> list[str]:
    bad = []
    for name, (path, is_pkg) in _source_modules(root).items():
        if _layer(name) != 0:
            continue
        for imp, line in _imports(path, name, is_pkg):
            top = imp.split(".")[0]
            if top not in ALGO_ALLOWED_TOP or (top == "masa" and _layer(imp) != 0):
                bad.append(f"{path.relative_to(root)}:{line} imports {imp}")
    return bad


def _upward_imports(root: Path) -> list[str]:
    bad = []
    for name, (path, is_pkg) in _source_modules(root).items():
        own = _layer(name)
        for imp, line in _imports(path, name, is_pkg):
            top = imp.split(".")[0]
            where = f"{path.relative_to(root)}:{line}"
            if top in ("components", "pipeline"):
                bad.append(f"{where} imports top-level {imp!r}; use masa.{imp}")
            elif top == "masa" and imp != "masa":
                target = _layer(imp)
                if target is None:
                    # `from masa.x import y` yields masa.x and masa.x.y: name the unknown module once.
                    if not any(b.startswith(f"{where} imports {imp.rpartition('.')[0]},") for b in bad):
                        bad.append(f"{where} imports {imp}, which has no layer in LAYERS")
                elif own is not None and target > own:
                    bad.append(f"{where}: {name} (layer {own}) imports {imp} (layer {target})")
    return bad


def _module_graph(root: Path) -> dict[str, dict[str, int]]:
    """Module -> {imported masa module: first line}. `from a import b` is an edge to the module a.b when b
    is one (importing it runs a's `__init__` too, but that is implied by the file layout, not a choice),
    else to a; imports inside functions count like the others."""
    mods = _source_modules(root)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_pkg) in mods.items():
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _from_base(node, name, is_pkg)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            for t in targets:
                if t in mods and t != name:
                    edges.setdefault(t, node.lineno)
    return graph


def _cycles(root: Path) -> list[str]:
    """Every import cycle between masa's modules (strongly connected components of `_module_graph`), as
    'a:LINE -> b:LINE -> a' with the line of each import."""
    graph = _module_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph has a few hundred nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    out = [_loop(graph, min(comp), set(comp)) for comp in comps]
    return sorted(out)


def _loop(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> str:
    """A shortest import loop from `start` back to it inside one cycle, as 'a (line N) -> b (line M) -> a'."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w not in members:
                    continue
                if w == start:
                    hops, u = [(v, w)], v
                    while u != start:
                        hops.append((prev[u], u))
                        u = prev[u]
                    hops.reverse()
                    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in hops) + f" -> {start}"
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no loop from {start}")


def _package_folders(root: Path) -> set[str]:
    folders = set()
    for folder, pkg in SOURCE_ROOTS.items():
        for d in [root / folder, *(p for p in (root / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in d.parts or not any(d.glob("*.py")):
                continue
            folders.add(".".join((pkg, *d.relative_to(root / folder).parts)))
    return folders


def test_every_masa_module_has_a_layer():
    unknown = _unknown_layers(ROOT)
    assert not unknown, f"give these modules a layer in tests/test_layers.py LAYERS: {unknown}"


def test_algo_imports_only_torch_and_stdlib_in_source():
    bad = _algo_violations(ROOT)
    assert not bad, "the pure layer (masa.algo, masa.configbase) imports torch + stdlib only:\n" + "\n".join(bad)


def test_algo_imports_nothing_heavy_at_run_time():
    # torch itself imports numpy, so the check is on what importing masa.algo.* adds after torch; the
    # source check above covers numpy.
    code = (
        "import importlib, json, pkgutil, sys\n"
        "import torch\n"
        "base = set(sys.modules)\n"
        "import masa.algo, masa.configbase\n"
        "for m in pkgutil.walk_packages(masa.algo.__path__, 'masa.algo.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - base})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    added = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert not added & ALGO_FORBIDDEN, f"importing masa.algo.* loads {sorted(added & ALGO_FORBIDDEN)}"


def test_nothing_imports_upward():
    bad = _upward_imports(ROOT)
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = _cycles(ROOT)
    assert not cycles, "import cycles (break each by moving the shared part below both):\n" + "\n".join(cycles)


def test_every_package_folder_is_listed_in_pyproject():
    st = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert st["package-dir"] == {"masa": "masa", "masa.components": "components", "masa.pipeline": "pipeline"}
    listed, folders = set(st["packages"]), _package_folders(ROOT)
    assert not folders - listed, f"add to [tool.setuptools] packages: {sorted(folders - listed)}"
    assert not listed - folders, f"listed packages without a folder of .py files: {sorted(listed - folders)}"


def test_the_checks_catch_violations(tmp_path):
    # A miniature tree with one violation of each kind: the checks must name every one.
    files = {
        "masa/__init__.py": "",
        "masa/algo/__init__.py": "",
        "masa/algo/bad.py": "import numpy\nfrom masa.steps import x\ndef f():\n    import vllm\n",
        "masa/algo/ok.py": "from __future__ import annotations\nimport math, torch\nfrom . import bad\n"
                           "from masa.configbase import check\n",
        "masa/steps/__init__.py": "from ..components import op\n",
        "masa/newtop.py": "",
        "masa/train/__init__.py": "from masa.newtop import y\n",
        "components/__init__.py": "import pipeline.dag\nfrom masa.pipeline import dag\n",
        "pipeline/__init__.py": "from masa.components import op\nfrom masa.cli import main\n",
        "pipeline/sub/__init__.py": "",
        # the middle layer is ordered: storage sits below train
        "masa/storage/__init__.py": "from masa.train import z\n",
        # a cycle hidden by an import inside a function, and one through a package's __init__
        "masa/runner/__init__.py": "",
        "masa/runner/a.py": "from masa.runner import b\n",
        "masa/runner/b.py": "def f():\n    from masa.runner.a import x\n",
        "masa/engines/__init__.py": "from masa.engines.rep import R\n",
        "masa/engines/rep.py": "from masa.engines.base import C\n\ndef g():\n    from masa.engines import make\n",
        "masa/engines/base.py": "",
        # the allowed direction: an __init__ re-exporting its submodule, which imports a sibling by name
        "masa/toy/__init__.py": "from masa.toy.build import build\n",
        "masa/toy/build.py": "from masa.toy import task\n",
        "masa/toy/task.py": "",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert _unknown_layers(tmp_path) == ["masa.newtop"]
    algo = "\n".join(_algo_violations(tmp_path))
    assert "bad.py:1 imports numpy" in algo and "bad.py:4 imports vllm" in algo
    assert "bad.py:2 imports masa.steps" in algo and "ok.py" not in algo
    up = "\n".join(_upward_imports(tmp_path))
    assert "masa.algo.bad (layer 0) imports masa.steps (layer 5)" in up
    assert "masa.steps (layer 5) imports masa.components (layer 6)" in up  # relative import resolved
    assert "imports masa.newtop, which has no layer" in up
    assert "imports top-level 'pipeline.dag'" in up
    assert "masa.components (layer 6) imports masa.pipeline (layer 7)" in up
    assert "masa.pipeline (layer 7) imports masa.cli (layer 8)" in up
    assert "masa.pipeline (layer 7) imports masa.components" not in up  # downward is fine
    assert "masa.storage (layer 1) imports masa.train (layer 2)" in up
    assert _cycles(tmp_path) == ["masa.components (line 2) -> masa.pipeline (line 1) -> masa.components",
                                 "masa.engines (line 1) -> masa.engines.rep (line 4) -> masa.engines",
                                 "masa.runner.a (line 1) -> masa.runner.b (line 2) -> masa.runner.a"]  # not toy
    assert _package_folders(tmp_path) == {"masa", "masa.algo", "masa.steps", "masa.train", "masa.storage",
                                          "masa.runner", "masa.engines", "masa.toy",
                                          "masa.components", "masa.pipeline", "masa.pipeline.sub"}


@pytest.mark.parametrize("name", ["components", "pipeline"])
def test_no_generic_top_level_package_is_installed(name, tmp_path):
    # Run outside the checkout: the repository root on sys.path would find the folders as namespace packages.
    code = (
        "import importlib.util, sys\n"
        f"assert importlib.util.find_spec('masa.{name}') is not None, 'masa.{name} is not importable'\n"
        f"try:\n    import {name}\nexcept ModuleNotFoundError:\n    sys.exit(0)\n"
        f"sys.exit('a top-level {name} package is importable from ' + str({name}.__path__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr or out.stdout
    for sp in site.getsitepackages():
        assert not (Path(sp) / name).exists(), f"{sp}/{name} is installed"
