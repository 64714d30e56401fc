"""`masa step NAME`: run one pipeline step alone, on the settings the pipeline gives it.

    masa step prepare --preset smoke --store /tmp/s --arg model_out=/tmp/base.json
    masa step rollout --preset toy --store /tmp/s --arg branch=grpo --arg round_idx=0 \\
        --arg prompts_path=... --arg policy_ptr=/tmp/base.json --arg history_path=null --arg out_ptr=/tmp/r.json

Calls the same `masa.steps` function as the step's KFP component, with the validated configuration of
--preset/--set/--store and the step's inputs and outputs as `--arg key=value` (pointer files and paths as
the component passes them; a JSON value such as 0, null or {"base": "..."} is parsed). The step reuses a
finished part exactly as in the pipeline (`run_once`). `masa rollout`, `masa score`, `masa train` and
`masa benchmark` are the friendlier twins of the steps that take plain files.
"""

from __future__ import annotations

import argparse

from masa.commands._common import add_config_arguments

HELP = "run one pipeline step alone (prepare, data-filter, rollout, ..., report) on the pipeline's settings"

# step name -> (module, function): the function each component in components/ calls
STEPS = {
    "prepare": ("masa.steps.prepare", "prepare_base"),
    "data-filter": ("masa.steps.prepare", "filter_data"),
    "stage": ("masa.steps.stage", "stage_inputs"),
    "rollout": ("masa.steps.rollout", "rollout_step"),
    "merge-rollouts": ("masa.steps.rollout", "merge_rollouts_step"),
    "score": ("masa.steps.score", "score_step"),
    "resume": ("masa.steps.resume", "resume_step"),
    "train": ("masa.steps.train", "train_step"),
    "benchmark": ("masa.steps.benchmark", "benchmark_step"),
    "benchmark-shard": ("masa.steps.benchmark", "benchmark_shard_step"),
    "merge-benchmarks": ("masa.steps.benchmark", "merge_benchmark_step"),
    "promote": ("masa.steps.promote", "promote_step"),
    "report": ("masa.steps.report", "build_report"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", choices=sorted(STEPS), help="the pipeline step")
    p.add_argument("--arg", dest="step_args", action="append", default=[], metavar="KEY=VALUE",
                   help="an input or output of the step (repeatable); JSON values are parsed")
    add_config_arguments(p)


def parse_step_args(items: list[str]) -> dict[str, object]:
    """`key=value` strings as keyword arguments; a value that reads as JSON is taken as JSON."""
    import json

    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    import importlib
    import inspect
    import json
    import sys

    from masa.commands._common import load

    cfg = load(args)
    module, name = STEPS[args.name]
    fn = getattr(importlib.import_module(module), name)
    wanted = [k for k, prm in inspect.signature(fn).parameters.items() if prm.kind == prm.KEYWORD_ONLY]
    try:
        kwargs = parse_step_args(args.step_args)
        unknown = sorted(set(kwargs) - set(wanted))
        if unknown:
            raise ValueError(f"takes no {', '.join(unknown)}")
        bound = inspect.signature(fn).bind(cfg, **kwargs)
    except (TypeError, ValueError) as e:
        print(f"masa step {args.name}: {e}; its arguments: {', '.join(wanted)}", file=sys.stderr)
        return 2
    result = fn(*bound.args, **bound.kwargs)
    out = result.to_dict() if hasattr(result, "to_dict") else result
    print(json.dumps(out, indent=2, sort_keys=True, default=str))
    return 0
