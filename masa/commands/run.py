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
    out = Path(args.out or Path("runs") / cfg.name)
    print(f"masa run: preset {args.preset}, {' vs '.join(cfg.branches)}, {cfg.rounds} rounds × "
          f"{cfg.prompts_per_round} prompts; {total_steps(cfg)} steps; output in {out}", flush=True)
    result = run_local(cfg, out)
    print(f"\nreport:     {result.get('report_html', '(none)')}\n            {result.get('report_json', '')}")
    for name, uri in result.get("checkpoints", {}).items():
        print(f"checkpoint: {name:<5} {uri}")
    print(f"log:        {result['log']}")
    return 0
