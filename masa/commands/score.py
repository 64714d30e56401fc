"""`masa score`: score one rollout shard, as the pipeline's score step does, alone.

    masa score --rollouts rollouts.parquet --model DIR --out DIR [--branch masa] [--preset toy --set ...]

Writes `scored.parquet` and `experts.parquet` into --out (docs/rollout-shard.md) and prints the round's
statistics as JSON. The settings are the score step's (`masa.runner.settings.algorithm_for`: the
configuration's algorithm under the branch's name). Exit status 2 for bad inputs (a missing shard or
column, an unreadable tokenizer).
"""

from __future__ import annotations

import argparse

from masa.commands._common import add_config_arguments

HELP = "score a rollout shard: verify, reward both paths, advantages, expert targets (the score step)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rollouts", required=True, help="rollout shard (rollouts.parquet)")
    p.add_argument("--model", required=True,
                   help="the policy's checkpoint directory (its tokenizer re-tokenizes expert targets)")
    p.add_argument("--out", required=True, help="output directory for scored.parquet and experts.parquet")
    p.add_argument("--branch", default=None, choices=("grpo", "masa", "masa-efficient"),
                   help="the algorithm branch (default: the config's algorithm.name)")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from masa.commands._common import load
    from masa.runner.scoring import score_shard
    from masa.runner.settings import algorithm_for

    cfg = load(args)
    algo = algorithm_for(cfg, args.branch or cfg.algorithm.name)
    try:
        stats = score_shard(args.rollouts, args.out, tokenizer_path=args.model, algo=algo,
                            max_response_tokens=cfg.rollout.max_response_tokens)
    except FileNotFoundError as e:  # pyarrow's carries the bare path as its message
        print(f"masa score: not found: {e.filename or e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"masa score: {e}", file=sys.stderr)
        return 2
    print(json.dumps(stats, indent=2, sort_keys=True, default=str))
    return 0
