"""Layering of the code base, checked on the source (ast) and at run time (a fresh interpreter).

    layer 0  masa (package), masa.configbase, masa.algo            torch + stdlib only
    layer 1  masa.engines, masa.storage, masa.train, masa.toy, masa.data, masa.config, masa.presets,
             masa.telemetry
    layer 2  masa.steps
    layer 3  masa.components  (folder components/)
    layer 4  masa.pipeline    (folder pipeline/)
    layer 5  masa.cli, masa.commands

A module may import its own layer and those below, never above. A new top-level module or package under
masa/ must be given a layer in LAYERS below (the test fails naming it), so the map stays the design.
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
    "masa.engines": 1, "masa.storage": 1, "masa.train": 1, "masa.toy": 1, "masa.data": 1, "masa.config": 1,
    "masa.presets": 1, "masa.telemetry": 1,
    "masa.steps": 2,
    "masa.components": 3,
    "masa.pipeline": 4,
    "masa.cli": 5, "masa.commands": 5,
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
    package = module if is_pkg else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.append((base, node.lineno))
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
    return found


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
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert _unknown_layers(tmp_path) == ["masa.newtop"]
    algo = "\n".join(_algo_violations(tmp_path))
    assert "bad.py:1 imports numpy" in algo and "bad.py:4 imports vllm" in algo
    assert "bad.py:2 imports masa.steps" in algo and "ok.py" not in algo
    up = "\n".join(_upward_imports(tmp_path))
    assert "masa.algo.bad (layer 0) imports masa.steps (layer 2)" in up
    assert "masa.steps (layer 2) imports masa.components (layer 3)" in up  # relative import resolved
    assert "imports masa.newtop, which has no layer" in up
    assert "imports top-level 'pipeline.dag'" in up
    assert "masa.components (layer 3) imports masa.pipeline (layer 4)" in up
    assert "masa.pipeline (layer 4) imports masa.cli (layer 5)" in up
    assert "masa.pipeline (layer 4) imports masa.components" not in up  # downward is fine
    assert _package_folders(tmp_path) == {"masa", "masa.algo", "masa.steps", "masa.train",
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
