"""`masa train`: one round of policy updates on DeepSpeed workers from a scored shard.

    masa train --model DIR|URI --scored scored.parquet [--experts experts.parquet] --out DIR|URI
               [--nproc N] [--resume-root DIR|URI] [--preset toy --set train.lr=1e-5 ...]

The training settings are those the pipeline's train step uses (`masa.runner.settings.train_settings`):
the run configuration's `train` section (preset + `--set train.KEY=VALUE`) with the branch's behaviour
cloning and the round's seed (`--branch`, default the config's algorithm; `--round`, 0-based as in
`masa rollout`, default 0).
Prints the result as JSON (checkpoint, global step, per-step metrics) on stdout. Exit status: 1 if a
worker died, 2 for bad inputs (missing shard, damaged checkpoint, invalid setting).
"""

from __future__ import annotations

import argparse
import json
import sys

from masa.commands._common import add_config_arguments, load

HELP = "train one round (GRPO/MASA policy update + expert behaviour cloning) on DeepSpeed workers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="policy checkpoint: HF directory or store URI")
    parser.add_argument("--scored", required=True, help="scored shard (docs/rollout-shard.md), path or URI")
    parser.add_argument("--experts", default=None, help="expert meta trajectories (experts.parquet)")
    parser.add_argument("--out", required=True, help="where the next checkpoint is published (dir or URI)")
    parser.add_argument("--nproc", type=int, default=None,
                        help="worker processes (default: the config's train_processes)")
    parser.add_argument("--resume-root", default=None,
                        help="where resumable state is saved every train.save_every steps, and resumed from")
    parser.add_argument("--work-dir", default=None, help="local scratch directory (default: a temp dir)")
    parser.add_argument("--branch", default=None, choices=("grpo", "masa", "masa-efficient"),
                        help="the algorithm branch trained (default: the config's algorithm.name)")
    parser.add_argument("--round", type=int, default=0, help="the round trained, 0-based (sets the seed)")
    parser.add_argument("--metrics-only", action="store_true", help="print only the per-step metrics (JSONL)")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from masa.runner.settings import train_settings
    from masa.runner.training import train_round
    from masa.storage import StorageError
    from masa.train.launch import TrainingFailed

    run_cfg = load(args)
    if args.round < 0:
        print(f"masa train: --round {args.round}: rounds count from 0", file=sys.stderr)
        return 2
    tcfg = train_settings(run_cfg, args.branch or run_cfg.algorithm.name, args.round)
    try:
        result = train_round(args.model, args.scored, args.experts, args.out, tcfg,
                             nproc=args.nproc or run_cfg.train_processes, resume_root=args.resume_root,
                             work_dir=args.work_dir)
    except TrainingFailed as e:
        print(f"masa train: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, StorageError, ValueError) as e:  # bad inputs: nothing was trained
        print(f"masa train: {e}", file=sys.stderr)
        return 2
    if args.metrics_only:
        for row in result["steps"]:
            print(json.dumps(row))
    else:
        print(json.dumps(result, indent=1))
    return 0
