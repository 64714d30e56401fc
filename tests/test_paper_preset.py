"""The `paper` presets as the paper and its released code (akatigre/MASA-RL) run them (issue 14)."""

from __future__ import annotations

import pytest

from masa.algo.prompts import RELEASED_INSTRUCTION, solution_prompt
from masa.config import load_config


def test_solution_instruction_default_real_models_get_the_released_sentence():
    assert RELEASED_INSTRUCTION == "Let's think step by step and output the final answer within \\boxed{}."
    assert solution_prompt("1 + 1?", RELEASED_INSTRUCTION) == "1 + 1? " + RELEASED_INSTRUCTION
    assert solution_prompt("1 + 1?", "") == "1 + 1?"
    assert load_config("paper").solution_instruction == RELEASED_INSTRUCTION
    # the toy keeps its own format, whatever preset it comes from
    assert load_config("toy").solution_instruction == ""
    assert load_config("smoke").solution_instruction == ""
    assert load_config("paper", ["model=toy"]).solution_instruction == ""
    # an explicit setting wins, "" included
    assert load_config("paper", ["data.solution_instruction="]).solution_instruction == ""
    assert load_config("toy", ["data.solution_instruction=Box it."]).solution_instruction == "Box it."


@pytest.mark.parametrize("preset", ["paper"])
def test_paper_preset_trains_each_sample_once(preset):
    t = load_config(preset).train
    # verl: ppo_mini_batch_size 128 prompts x n 16, ppo_epochs 1 (train_masagrpo.sh)
    assert (t.samples_per_step, t.steps_per_round, t.epochs) == (2048, 1, 1)


SIX_AND_GPQA = ("MATH-500", "aime24", "aime25", "amc23", "minervamath", "olympiadbench", "gpqa-diamond")


@pytest.mark.parametrize(("preset", "model", "gpus"), [("paper", "Qwen/Qwen3-8B-Base", 8),
                                                       ("paper-1.7b", "Qwen/Qwen3-1.7B-Base", 4)])
def test_paper_preset_values(preset, model, gpus):
    from masa.runner.evaluate import benchmark_name

    cfg = load_config(preset)
    assert cfg.model == model and cfg.resources.train_gpus == cfg.train_processes == gpus
    # released train_masagrpo.sh: max_prompt_length 2048, train_batch_size 128, n 16, meta_cog_n 16,
    # max_response_length 8192, total_epochs 1 = 314 batches of DeepScaleR's 40,315 problems
    assert (cfg.data.max_prompt_tokens, cfg.prompts_per_round, cfg.rollout.max_response_tokens) == (2048, 128, 8192)
    assert (cfg.algorithm.n_solution, cfg.algorithm.n_meta) == (16, 16)
    assert cfg.rounds == 40_315 // 128 == 314
    assert cfg.branches == ("grpo", "masa", "masa-efficient")
    assert tuple(benchmark_name(d) for d in cfg.benchmark.datasets) == SIX_AND_GPQA


def test_baselines_are_checked():
    from masa.configbase import ConfigError

    with pytest.raises(ConfigError, match="baselines: must start with grpo"):
        load_config("toy", ["baselines=[masa]"])
    with pytest.raises(ConfigError, match="baselines"):
        load_config("toy", ["baselines=[grpo, masa-efficient]"])  # repeats algorithm.name
    assert load_config("toy").branches == ("grpo", "masa-efficient")  # the toy's two branches, as before


@pytest.mark.parametrize("preset", ["paper", "paper-1.7b"])
def test_paper_presets_compile_with_three_branches_and_seven_benchmarks(preset, tmp_path):
    # rounds=2 keeps it to one run; the full 314 rounds are 105 runs of this shape (tests/test_bounded_runs.py)
    import json

    import yaml

    from masa.pipeline.compile import compile_pipeline

    LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: parses the IR 5x faster

    # the library compile: `masa compile` also runs the cluster preflight (tests/test_cluster.py)
    out = compile_pipeline(load_config(preset, ["rounds=2"]), tmp_path / "p.yaml")
    spec = next(yaml.load_all(out.read_text(), LOADER))
    tasks = spec["root"]["dag"]["tasks"]
    assert sum(k.startswith("rollout") for k in tasks) == 3 * 2  # three branches x two rounds
    benchmarks = sorted(t["taskInfo"]["name"] for k, t in tasks.items() if k.startswith("benchmark"))
    # base + one per branch, each under its own name (the report compares grpo with masa = masa-efficient)
    assert benchmarks == ["benchmark · base", "benchmark · baseline-masa", "benchmark · grpo", "benchmark · masa"]
    text = json.dumps(spec)
    assert all(name in text for name in SIX_AND_GPQA)
