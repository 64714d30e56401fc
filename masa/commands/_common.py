"""Arguments shared by the commands that take a run configuration."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


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


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of the commands that compile for a cluster (compile, submit, schedule, preflight)."""
    import os

    env = os.environ.get("MASA_IMAGE_REGISTRY")
    p.add_argument("--image-registry", default=env,
                   help="registry/namespace the images were pushed to by images/build.sh (default: "
                        "$MASA_IMAGE_REGISTRY, the variable build.sh reads; --set images.* wins)")
    p.add_argument("--image-digests", default=None, metavar="FILE",
                   help="JSON of the images pushed by `images/build.sh --push` (images/digests.json): compile "
                        "them by digest, so a rebuilt image is a new cache key (--set images.* wins)")
    p.add_argument("--kfp-version", default=None, metavar="X.Y",
                   help="KFP backend version of the cluster: leave out what it cannot read, or refuse "
                        "(default: the minimum that reads everything)")


def load_cluster(args: argparse.Namespace, *, refuse: bool = True):
    """(RunConfig, backend version, checks) of a cluster compile; with `refuse`, exit 2 printing
    the failing checks (a cluster would fail the run on them)."""
    from masa.pipeline.k8s import MIN_BACKEND, parse_version
    from masa.pipeline.preflight import checks, digest_overrides, image_overrides

    pinned = []
    if args.image_digests:
        try:
            pinned = digest_overrides(args.image_digests)
        except ValueError as e:
            print(f"masa: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if args.image_registry:  # before the user's --set, so an explicit images.* override wins
        args.overrides = image_overrides(args.image_registry) + pinned + list(args.overrides)
    else:
        args.overrides = pinned + list(args.overrides)
    try:
        version = parse_version(args.kfp_version) if args.kfp_version else MIN_BACKEND
    except ValueError as e:
        print(f"masa: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    cfg = load(args)
    found = checks(cfg, version)
    failed = [c for c in found if c.status == "FAIL"]
    if refuse and failed:
        print("masa: not compiled for a cluster (masa preflight lists every check):", file=sys.stderr)
        for c in failed:
            print(f"  {c.line()}", file=sys.stderr)
        raise SystemExit(2)
    return cfg, version, found


def cannot_write(folders: dict[str, Path]) -> list[str]:
    """`label: why` for each folder that cannot be made or written, checked before any work rather than
    met as a traceback from the first write. Made and written as the work would: access(2) says yes to
    root on places where mkdir fails."""
    problems = []
    for label, folder in folders.items():
        path = folder.expanduser()
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as e:
            problems.append(f"{label}: cannot write to {folder}: {e.strerror or e}")
    return problems
