HELP = "run the whole pipeline locally (kfp.local SubprocessRunner): data → rounds → benchmark → report"


def add_arguments(p):
    from masa.commands._common import add_config_arguments

    add_config_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default: runs/<preset name>)")


def run(args) -> int:
    from pathlib import Path

    from masa.commands._common import load
    from masa.pipeline.local import run_local, total_steps

    cfg = load(args)
    bad = preflight(cfg)
    if bad:
        import sys

        print("masa: cannot start:\n  - " + "\n  - ".join(bad), file=sys.stderr)
        return 2
    out = Path(args.out or Path("runs") / cfg.name)
    print(f"masa run: preset {args.preset}, {' vs '.join(cfg.branches)}, {cfg.rounds} rounds × "
          f"{cfg.prompts_per_round} prompts; {total_steps(cfg)} steps; output in {out}", flush=True)
    result = run_local(cfg, out)
    print(f"\nreport:     {result.get('report_html', '(none)')}\n            {result.get('report_json', '')}")
    for name, uri in result.get("checkpoints", {}).items():
        print(f"checkpoint: {name:<5} {uri}")
    print(f"log:        {result['log']}")
    return 0


def preflight(cfg) -> list[str]:
    """Every data source and the model path checked before anything runs (all problems at once)."""
    from masa.data.records import check_sources

    sources = {"data.train": cfg.data.train, "data.heldout": cfg.data.heldout}
    sources.update({f"benchmark.datasets[{i}]": d for i, d in enumerate(cfg.benchmark.datasets)})
    problems = check_sources({k: v for k, v in sources.items() if v and v != "toy"})
    if cfg.model != "toy" and not cfg.model.startswith("s3://"):
        from pathlib import Path

        local = Path(cfg.model).expanduser()
        looks_local = cfg.model.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local / "config.json").is_file():
            problems.append(f"model: {cfg.model} is not a model directory (no config.json)")
    return problems
