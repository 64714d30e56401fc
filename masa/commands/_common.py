"""Arguments shared by the commands that take a run configuration."""

from __future__ import annotations

import argparse
import sys


def add_config_arguments(p: argparse.ArgumentParser, default_preset: str = "toy") -> None:
    p.add_argument("--preset", default=default_preset,
                   help="built-in preset (toy, smoke, paper, paper-1.7b) or a YAML file (default: %(default)s)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set rounds=2 --set algorithm.n_solution=8 (repeatable)")
    p.add_argument("--store", default=None, help="artifact store URI: a directory or s3://bucket/prefix")


def load(args: argparse.Namespace):
    """The validated RunConfig, or exit 2 listing every problem (nothing has run yet)."""
    from masa.config import load_config
    from masa.configbase import ConfigError

    overrides = list(args.overrides) + ([f"store={args.store}"] if args.store else [])
    try:
        return load_config(args.preset, overrides)
    except ConfigError as e:
        print(f"masa: {e}", file=sys.stderr)
        raise SystemExit(2) from None
