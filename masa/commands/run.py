HELP = "run the whole pipeline locally (kfp.local SubprocessRunner): data → rounds → benchmark → report"


def add_arguments(p):
    from masa.commands._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default: runs/<preset name>)")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of a failed step")
    p.add_argument("--recheck", action="store_true",
                   help="run every step again instead of reusing kfp.local's cache; parts in the store that "
                        "verify are still reused, so only missing or corrupt ones (and what depends on them) "
                        "are recomputed")
    p.add_argument("--cold", action="store_true",
                   help="start every step in a fresh Python interpreter with its own vLLM engine, as a cluster "
                        "pod does (default: fork each step's process from one that has already imported torch, "
                        "vLLM and the steps, and keep one vLLM engine per configuration for the whole run)")


def run(args) -> int:
    import sys
    from pathlib import Path

    from masa.commands._common import load
    from masa.pipeline.local import PipelineFailed, RunInProgress, run_local, total_steps

    cfg = load(args)
    out = Path(args.out or Path("runs") / cfg.name)
    bad = preflight(cfg) + unwritable(cfg, out)
    if bad:
        print("masa: cannot start:\n  - " + "\n  - ".join(bad), file=sys.stderr)
        return 2
    print(f"masa run: preset {args.preset}, {' vs '.join(cfg.branches)}, {cfg.rounds} rounds × "
          f"{cfg.prompts_per_round} prompts; {total_steps(cfg)} steps; output in {out}", flush=True)
    try:
        result = run_local(cfg, out, kfp_cache=not args.recheck, warm=not args.cold)
        bad = unverified(result.get("checkpoints", {}))
        if bad and not args.recheck:  # kfp.local reused tasks whose outputs no longer verify: redo them
            for name, why in bad.items():
                print(f"masa: warning: checkpoint {name} {why}; recomputing it", flush=True)
            result = run_local(cfg, out, kfp_cache=False, warm=not args.cold)
            bad = unverified(result.get("checkpoints", {}))
    except PipelineFailed as e:  # an expected failure: its reason, how to go on; the traceback is in the log
        if args.debug:
            raise
        print(f"masa: {e}\nfix the cause and rerun the same command: finished steps are reused "
              f"(full log: {e.log})", file=sys.stderr)
        return 1
    except RunInProgress as e:
        print(f"masa: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmasa: interrupted; finished steps are kept: rerun the same command to go on ({out})",
              file=sys.stderr)
        return 130
    summary = Path(result.get("report_md") or "")
    paths = [result.get("report_html", "(none)"), result.get("report_json", "")]
    if summary.is_file():  # what the Kubeflow UI shows of a run, for a terminal with no browser near it
        print("\n" + terminal_text(summary.read_text().split("\n", 2)[-1]))
        paths.append(str(summary))
    print("\nreport:     " + "\n            ".join(paths))
    if result.get("report_store"):
        print(f"            {result['report_store']}")
    for name, uri in result.get("checkpoints", {}).items():
        if name not in bad:  # never shown as a result unless its manifest verifies
            print(f"checkpoint: {name:<5} {uri}")
    print(f"log:        {result['log']}")
    for name, why in bad.items():
        print(f"masa: checkpoint {name} {why}; check the run with `masa store verify URI --deep`",
              file=sys.stderr)
    return 1 if bad else 0


def terminal_text(markdown: str, width: int = 100) -> str:
    """The report's Markdown for a terminal: prose paragraphs wrapped, tables as they are."""
    import textwrap

    blocks = [b for b in markdown.strip().split("\n\n") if b.strip()]
    return "\n\n".join(b if b.lstrip().startswith("|") else textwrap.fill(b, width) for b in blocks)


def unverified(checkpoints: dict[str, str]) -> dict[str, str]:
    """name -> why, for each final checkpoint that does not verify against its manifest (sizes and
    sha256: recorded at upload on S3, hashed on local disk)."""
    from masa.storage import StorageError, open_store, verify_stored

    bad = {}
    for name, uri in checkpoints.items():
        try:
            problems = verify_stored(open_store(uri), "") if uri else ["no URI in the report"]
        except (StorageError, ValueError) as e:
            problems = [str(e)]
        if problems:
            bad[name] = f"at {uri} failed verification ({'; '.join(problems)})"
    return bad


def preflight(cfg) -> list[str]:
    """Every data source and the model path checked before anything runs (all problems at once)."""
    from masa.data.records import check_sources

    sources = {"data.train": cfg.data.train, "data.heldout": cfg.data.heldout}
    sources.update({f"benchmark.datasets[{i}]": d for i, d in enumerate(cfg.benchmark.datasets)})
    problems = check_sources({k: v for k, v in sources.items() if v and v != "toy"})
    # a registry reference (`latest:<name>`, `.../models/<name>/latest`) is resolved by the prepare step
    registry = cfg.model.startswith("latest:") or cfg.model.rstrip("/").endswith("/latest")
    if cfg.model != "toy" and not cfg.model.startswith("s3://") and not registry:
        from pathlib import Path

        local = Path(cfg.model).expanduser()
        looks_local = cfg.model.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local / "config.json").is_file():
            problems.append(f"model: {cfg.model} is not a model directory (no config.json)")
    return problems


def unwritable(cfg, out) -> list[str]:
    """The folders this run writes to (output, a local store, the toy cache) that cannot be written."""
    import os
    from pathlib import Path

    from masa.commands._common import cannot_write

    folders, problems = {"--out": Path(out)}, []
    if cfg.store:  # a directory or file:// URI, read as the store reads it
        from masa.storage import open_store
        from masa.storage.local import LocalStore

        try:
            store = open_store(cfg.store)
            if isinstance(store, LocalStore):
                folders["store"] = store.root
        except ValueError as e:  # an unsupported scheme, or a file:// URI naming another host
            problems.append(f"store: {e}")
    if cfg.model == "toy":
        from masa.toy.build import default_cache_dir

        folders["MASA_CACHE_DIR" if os.environ.get("MASA_CACHE_DIR") else "toy cache"] = default_cache_dir()
    return problems + cannot_write(folders)
