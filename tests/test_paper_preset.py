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
