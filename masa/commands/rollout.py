"""`masa rollout --prompts P --model M --out DIR`: one rollout step outside the pipeline.

Writes DIR/rollouts.parquet (schema: docs/rollout-shard.md) and DIR/rollout_stats.json, and prints the
stats. Sampling and algorithm settings come from the run configuration (`--preset`, `--set`), e.g.
`--set algorithm.name=masa-efficient --set rollout.max_response_tokens=256`.
"""

from __future__ import annotations

import argparse

from masa.commands._common import add_config_arguments

HELP = "sample one round of rollouts (grpo / masa / masa-efficient) into a parquet shard"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", required=True, help="prompt batch: verl .parquet or .jsonl (or s3:// URI)")
    p.add_argument("--model", required=True, help="policy checkpoint: local dir, s3:// URI or Hugging Face id")
    p.add_argument("--out", required=True, help="output directory for rollouts.parquet and rollout_stats.json")
    p.add_argument("--round", type=int, default=0, help="training round, 0-based (seeds, shard column)")
    p.add_argument("--branch", default=None, choices=("grpo", "masa", "masa-efficient"),
                   help="the algorithm branch (default: the config's algorithm.name)")
    p.add_argument("--mae-history", default="",
                   help="comma-separated pass-rate MAE of earlier rounds, oldest first (gating switch)")
    p.add_argument("--gate-history", default="",
                   help="comma-separated HITS/CANDIDATES of earlier rounds, oldest first: of the rolled-out prompts "
                        "gating would have skipped, how many were on the skipped side (gating switch, "
                        "algorithm.gating.min_precision)")
    p.add_argument("--signal-history", default="",
                   help="comma-separated MIXED_CANDIDATES/MIXED/CANDIDATES/GATED of earlier rounds, oldest first: of "
                        "the rolled-out prompts' mixed groups, how many gating would have skipped, with the round's "
                        "rolled-out candidates and skipped prompts (gating switch, algorithm.gating.max_signal_loss)")
    p.add_argument("--cut-history", default="",
                   help="comma-separated WOULD_CUT/PASSING of earlier rounds, oldest first: of the passing solutions "
                        "of prompts cutoff did not act on, how many its budgets would have cut (cutoff switch, "
                        "algorithm.cutoff.max_cut_passing)")
    add_config_arguments(p)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"masa rollout: --mae-history must be comma-separated numbers, got {text!r}") from None


def _counts(text: str, flag: str, names: str) -> list[tuple[int, ...]]:
    """Comma-separated entries of slash-separated integers, one per name in `names` (e.g. HITS/CANDIDATES)."""
    try:
        out = [tuple(int(v) for v in x.split("/")) for x in text.split(",") if x.strip()]
        if any(len(t) != names.count("/") + 1 for t in out):
            raise ValueError
        return out
    except ValueError:
        raise SystemExit(f"masa rollout: {flag} must be comma-separated {names}, got {text!r}") from None


def _pairs(text: str) -> list[tuple[int, int]]:
    return _counts(text, "--gate-history", "HITS/CANDIDATES")


def _quads(text: str) -> list[tuple[int, int, int, int]]:
    return _counts(text, "--signal-history", "MIXED_CANDIDATES/MIXED/CANDIDATES/GATED")


def _cuts(text: str) -> list[tuple[int, int]]:
    return _counts(text, "--cut-history", "WOULD_CUT/PASSING")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import sys

    from masa.commands._common import load
    from masa.data.records import DataError
    from masa.engines import ModelNotFoundError
    from masa.runner.rollout import run_rollout_step
    from masa.runner.settings import algorithm_for, engine_config, rollout_model_len, sampling_settings

    cfg = load(args)  # the rollout step's settings and engine (GPUs split as the pipeline splits them)
    try:
        stats = run_rollout_step(
            args.prompts, args.model, args.out, algorithm=algorithm_for(cfg, args.branch or cfg.algorithm.name),
            settings=sampling_settings(cfg), round_index=args.round, seed=cfg.seed,
            mae_history=_floats(args.mae_history), gate_history=_pairs(args.gate_history),
            signal_history=_quads(args.signal_history), cut_history=_cuts(args.cut_history),
            engine_config=engine_config(cfg, "rollout", args.model, rollout_model_len(cfg)))
    except (DataError, ModelNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"masa rollout: {e}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(stats), indent=2, sort_keys=True))
    return 0
