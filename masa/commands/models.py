"""`masa models list|show|promote|rollback --store URI`: the model registry (masa.storage.registry).

    masa models list --store s3://bucket/runs              every model and the version it points at
    masa models show NAME --store ...                      its versions, history and the current record
    masa models promote NAME VERSION --store ...           point latest at an existing version
    masa models promote NAME --from DIR_OR_URI --store ... publish a model (e.g. the first one) and point at it
    masa models rollback NAME --store ...                  point latest back at the previous version

The pointer moves by compare-and-swap: if another promotion moved it meanwhile, the command fails
(exit 1) naming it, and nothing changes. Exit 2: the store cannot be read or the name is unknown.
"""

from __future__ import annotations

import sys

HELP = "list, show, promote and roll back promoted models (<store>/models/<name>/)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    for name, help_ in (("list", "every model and its latest version"), ("show", "a model's versions and record"),
                        ("promote", "point latest at VERSION, or publish --from a model directory"),
                        ("rollback", "point latest back at the previous version")):
        a = sub.add_parser(name, help=help_)
        a.add_argument("--store", required=True, help="the artifact store (directory or s3://bucket/prefix)")
        if name != "list":
            a.add_argument("name", help="the model's registry name (promotion.model_name)")
        if name == "promote":
            a.add_argument("version", nargs="?", default=None, help="an existing version (see `masa models show`)")
            a.add_argument("--from", dest="source", default=None, help="publish this model (path, s3:// or latest:) first")


def run(args) -> int:
    from masa.storage import StorageError, open_store
    from masa.storage.base import PreconditionFailedError

    try:
        store = open_store(args.store)
        return _ACTIONS[args.models_command](store, args)
    except PreconditionFailedError as e:
        print(f"masa models: another promotion moved the pointer meanwhile; nothing changed ({e})", file=sys.stderr)
        return 1
    except (StorageError, ValueError) as e:
        print(f"masa models {args.models_command}: {e}", file=sys.stderr)
        return 2


def _list(store, args) -> int:
    from masa.storage.registry import models, read_latest

    names = models(store)
    for name in names:
        p, _ = read_latest(store, name)
        print(f"{name}\t{p.version}\t{p.updated_at}")
    if not names:  # said, so that a mistyped --store is not read as an empty registry without a word
        print(f"masa models list: no promoted model under {store.uri('models')}", file=sys.stderr)
    return 0


def _show(store, args) -> int:
    import json

    from masa.storage.registry import models, read_latest, read_record, versions

    p, _ = read_latest(store, args.name)
    known_versions = versions(store, args.name)
    if p is None and not known_versions:
        known = ", ".join(models(store)) or "none"
        print(f"masa models show: no model {args.name!r} under {store.uri('models')} (models there: {known})",
              file=sys.stderr)
        return 2
    print(f"model {args.name}: latest {p.version if p else '(none)'}; history {' -> '.join(p.history) if p else '-'}")
    for v in known_versions:
        r = read_record(store, args.name, v)
        print(f"{'*' if p and v == p.version else ' '} {v}\trun {r.get('run_id', '?')}\tdata {r.get('data_snapshot', '?')}")
    if p:
        rec = {k: v for k, v in read_record(store, args.name, p.version).items() if k not in ("config", "results", "evals")}
        print(json.dumps(rec, indent=1, sort_keys=True))
    return 0


def _promote(store, args) -> int:
    from masa.storage import resolve_model
    from masa.storage.registry import promote, publish

    if bool(args.version) == bool(args.source):
        print("masa models promote: give a VERSION or --from a model, not both or neither", file=sys.stderr)
        return 2
    version = args.version
    if args.source:
        local = resolve_model(args.source, store=args.store)
        version = publish(store, args.name, local, {"source": args.source, "reason": "published by masa models promote"})
    p = promote(store, args.name, version)
    print(f"{args.name}: latest -> {p.version} (history {' -> '.join(p.history)})")
    return 0


def _rollback(store, args) -> int:
    from masa.storage.registry import rollback

    p = rollback(store, args.name)
    print(f"{args.name}: rolled back; latest -> {p.version}")
    return 0


_ACTIONS = {"list": _list, "show": _show, "promote": _promote, "rollback": _rollback}
