"""Every name a KFP component body imports exists.

Component bodies import inside the function (KFP runs the body alone in its step's container), so a
moved or deleted library function breaks a step only when a pipeline runs it: minutes into `masa run`, or
on a cluster. This reads each body's `from X import Y` statements and checks, in one process, that X
imports and has Y.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

COMPONENTS = Path(__file__).resolve().parents[1] / "components"


def _imports() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(COMPONENTS.glob("*.py")):
        for fn in ast.parse(path.read_text()).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("masa"):
                    found += [(f"{path.name}:{fn.name}", node.module, a.name) for a in node.names]
    return found


def test_components_import_something():
    assert len(_imports()) > 20  # the walk above sees the bodies (a vacuous pass would find none)


@pytest.mark.parametrize("where,module,name", _imports(), ids=lambda v: str(v))
def test_component_body_import_resolves(where, module, name):
    mod = importlib.import_module(module)
    assert hasattr(mod, name), f"{where}: `from {module} import {name}`: {module} has no {name}"
