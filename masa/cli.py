"""`masa` command line: one sub-command per module in `masa.commands`.

Each command module exposes `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`;
they import their heavy dependencies inside `run`, so `masa --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> module under masa.commands
COMMANDS = {
    "run": "run",
    "verify": "verify",
    "toy": "toy",
    "rollout": "rollout",
    "score": "score",
    "train": "train",
    "benchmark": "benchmark",
    "compile": "compile",
    "submit": "submit",
    "schedule": "schedule",
    "store": "store",
    "preflight": "preflight",
    "stage": "stage",
    "models": "models",
    "step": "step",
}


def _available() -> dict[str, object]:
    mods = {}
    for name, mod in COMMANDS.items():
        try:
            mods[name] = importlib.import_module(f"masa.commands.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"masa.commands.{mod}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="masa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, mod in _available().items():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from masa.telemetry import configure_logging

    configure_logging()  # JSON lines when stderr is not a terminal
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
