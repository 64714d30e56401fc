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
  110.00000000000001) does not add a token;
- an optional reliability switch (`cutoff_active`, off with max_cut_passing = 1): cutoff starts only once,
  on rounds that ran without it, the budgets would have cut at most a given share of the passing
  solutions (`cut_evidence`). A base model's length predictions can sit far below its solutions'
  lengths, and a cut solution counts as failing (docs/report.md, "Cutoff on an uncalibrated length
  prediction"). Evidence comes only from rounds where cutoff did not act, so once on it stays on.
Pure: torch + stdlib.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def cut_evidence(budget: Tensor, applied: Tensor, lengths: Tensor, passed: Tensor, valid: Tensor) -> tuple[int, int]:
    """(passing solutions the budget would have cut, passing solutions) on the prompts it was not applied to.

    budget [B] long (`cutoff_budget`), applied [B] bool (the prompt's solutions ran under it), lengths [B, G]
    response tokens, passed / valid [B, G] bool. A passing solution longer than its prompt's budget is one
    that cutoff would have stopped and scored 0.
    """
    seen = passed & valid & ~applied.unsqueeze(-1)
    return int((seen & (lengths > budget.unsqueeze(-1))).sum()), int(seen.sum())


def cutoff_active(history: Sequence[tuple[int, int]], *, window: int, max_cut_passing: float) -> bool:
    """Whether cutoff acts this round, from earlier rounds' `cut_evidence` (oldest first).

    Always with max_cut_passing >= 1 (no switch: the paper's description). Otherwise once at least `window`
    rounds gave evidence (a passing solution on a prompt cutoff did not act on) and, pooled over the last
    `window` of those, at most max_cut_passing of their passing solutions would have been cut. A round
    where cutoff acted on every prompt gives (0, 0): no evidence, so it does not turn cutoff off again.
    """
    if window < 1 or not 0 <= max_cut_passing <= 1:
        raise ValueError(f"need window >= 1 and 0 <= max_cut_passing <= 1; got {window}, {max_cut_passing}")
    bad = [i for i, (c, n) in enumerate(history) if not 0 <= c <= n]
    if bad:
        raise ValueError(f"history entries must be (would_cut, passing) with 0 <= would_cut <= passing; "
                         f"bad at rounds {bad}")
    if max_cut_passing >= 1:
        return True
    evidence = [(c, n) for c, n in history if n > 0]
    if len(evidence) < window:
        return False
    recent = evidence[-window:]
    return sum(c for c, _ in recent) / sum(n for _, n in recent) <= max_cut_passing
