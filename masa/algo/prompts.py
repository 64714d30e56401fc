"""The solution path's user-turn text: the problem plus the run's solution instruction.

The paper's released code (akatigre/MASA-RL, `data_preprocess.py`) appends one sentence to every
training and evaluation problem, ``problem + " " + RELEASED_INSTRUCTION``, and its meta prompt shows the
problem with that sentence. Our verifier (masa.algo.verifier) accepts a boxed answer or an explicit
answer phrase, so a base model that is not told to box scores 0 on answers it got right: real models
get the released sentence by default (`masa.config.RunConfig.solution_instruction`). The toy keeps its
own format (no instruction): its tokenizer and warm start know only the toy task's text.

Vanilla GRPO recipes differ in this sentence (verl's GSM8K example asks for "####"); it is one
setting, `data.solution_instruction`, used by rollouts, the benchmark and the data filter's length check.

Pure: stdlib only.
"""

from __future__ import annotations

RELEASED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


def solution_prompt(problem: str, instruction: str = "") -> str:
    """The problem as the solution path (and the meta prompt) shows it: ``problem + " " + instruction``,
    or the bare problem when `instruction` is empty (the released code's join)."""
    return f"{problem} {instruction}" if instruction else problem


def feedin_hint(notions: tuple[str, ...] | None, solution_length: int | None) -> str:
    """The meta feed-in hint ("MAPR", v2 of the paper; released `meta_feedin`): the sentences the
    released trainer builds from one meta prediction, for the fields it has ("" when none)."""
    out = ""
    if notions:
        out += f" The problem could be solved using following math notions: {list(notions)}. "
    if solution_length is not None:
        out += f" The solution length in token level should be {solution_length}."
    return out


def with_hint(text: str, hint: str) -> str:
    """The solution text with the feed-in hint after a blank line, as the released trainer joins it."""
    return f"{text}\n\n{hint}" if hint else text
