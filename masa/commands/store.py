"""`masa store verify URI [--deep]`: check every committed artifact of a run (or any store prefix)
against its manifest.

Each artifact (a prefix holding MANIFEST.json: checkpoints, rollout and scored shards, stats, the
report) is checked file by file: size and sha256, from the object metadata recorded at upload on S3
(one HEAD per file, nothing downloaded) or by hashing on local disk; `--deep` downloads and hashes
everything. Prints one line per bad artifact naming the bad files, the objects no manifest lists,
and a summary. Exit status: 0 all verify, 1 some artifact is bad, 2 the store cannot be read or holds no artifact.
"""

from __future__ import annotations

import sys

HELP = "check the artifacts in a store against their manifests (masa store verify URI)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    v = sub.add_parser("verify", help="verify every artifact under URI (exit 1 naming the bad ones)")
    v.add_argument("uri", help="a run's store prefix, e.g. s3://bucket/runs/smoke-1a2b3c, or a directory")
    v.add_argument("--deep", action="store_true", help="download and hash every file (default: sizes and the "
                   "sha256 recorded at upload on S3, full hashes on local disk)")


def run(args) -> int:
    from masa.storage import StorageError, open_store, verify_tree

    try:
        store = open_store(args.uri)
        check = verify_tree(store, deep=args.deep)
    except (StorageError, ValueError) as e:
        print(f"masa store verify: {e}", file=sys.stderr)
        return 2
    for prefix, problems in sorted(check.bad.items()):
        print(f"BAD  {store.uri(prefix)}: {'; '.join(problems)}")
    for key in check.unlisted:
        print(f"note {store.uri(key)}: in no manifest (an interrupted step's leftover, or written outside masa)")
    n, bad = len(check.artifacts), len(check.bad)
    if n == 0:  # a mistyped URI must not pass as "0 of 0 verify" in a script
        print(f"masa store verify: no artifacts under {args.uri} (none holds a MANIFEST.json): not a run's "
              "store prefix, or nothing published yet", file=sys.stderr)
        return 2
    print(f"{n - bad} of {n} artifacts verify{' (deep)' if args.deep else ''}"
          + (f"; {bad} bad: rerun `masa run --recheck` with the run's settings to recompute them" if bad else ""))
    return 1 if bad else 0
