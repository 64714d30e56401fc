"""Early cutoff (MASA-efficient): a per-prompt token budget for solution rollouts from predicted lengths.

Shapes: B prompts, Gm meta rollouts per prompt.

    budget_b = clamp(ceil(multiplier * median_b), min_tokens, max_tokens)    if prompt b has a prediction
    budget_b = max_tokens                                                     otherwise

where median_b is the median (`masa.algo.gating.median_prediction`) of the meta group's parsed
`solution_length` predictions. The rollout engine uses budget_b as the prompt's max new tokens; a solution
cut off by it is rewarded 0 (`masa.algo.rewards.solution_reward`). The rationale: rollouts far longer than
the model itself expects are mostly failing (looping, rambling) and are the most expensive ones. Vanilla
GRPO uses one global max_response_tokens for every prompt.

How this differs from the paper's released code (akatigre/MASA-RL, as stored at 80b3cfa): its trainer has no
cutoff path (every solution runs to the global response length; a predicted length only reaches the solution
prompt as text through `meta_feedin`). We follow the paper's description, with these choices made explicit:
- the median over the group, not one random meta sample, so one wild prediction cannot starve a prompt;
- a floor `min_tokens`, so an absurdly short prediction (e.g. 1) cannot make a prompt unanswerable;
- the ceiling `max_tokens` (the run's max response length) also for prompts without a parsable prediction,
  i.e. an unparsable meta output never shortens a rollout;
- the ceil is taken after subtracting 1e-6, so float error in multiplier * length (1.1 * 100 =
  110.00000000000001) does not add a token.
Pure: torch + stdlib.
"""

from __future__ import annotations

import torch
from torch import Tensor

from masa.algo.gating import median_prediction

# Absorbs float error of multiplier * length before the ceil (lengths are integers far below 1e6).
_CEIL_SLACK = 1e-6


def cutoff_budget(pred_len: Tensor, valid: Tensor, *, multiplier: float = 2.0, min_tokens: int = 16,
                  max_tokens: int) -> Tensor:
    """Per-prompt max new tokens: pred_len, valid [B, Gm] -> [B] long in [min_tokens, max_tokens].

    See the module docstring for the formula; prompts without any valid prediction get max_tokens.
    """
    if not multiplier > 0:
        raise ValueError(f"multiplier must be > 0, got {multiplier}")
    if not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"need 1 <= min_tokens <= max_tokens; got min_tokens={min_tokens}, "
                         f"max_tokens={max_tokens}")
    median, has = median_prediction(pred_len, valid)
    scaled = torch.ceil(multiplier * torch.where(has, median, 0.0) - _CEIL_SLACK)
    budget = torch.clamp(scaled, min=min_tokens, max=max_tokens)
    return torch.where(has, budget, float(max_tokens)).to(torch.long)
