"""Expert meta trajectories: the best meta rollout of a prompt, corrected to what actually happened.

Vanilla GRPO has no such targets. In MASA (arXiv 2510.03259, Sec. 3, expert trajectories), for each
prompt the meta rollout with the highest meta reward becomes a behaviour-cloning target after its
predicted values are replaced by the observed statistics of the same prompt's solution rollouts, so
the model is cloned towards *correct* meta predictions with its own reasoning and notions.

    expert(b) = argmax_j r_meta[b, j]   over valid j,  kept only if r_meta[b, expert(b)] > min_reward
    target pass_rate       = round(p_b * G)             p_b = observed fraction correct (= #correct if G rows)
    target solution_length = round(mean length of correct rollouts), or of all rollouts if none is correct

How we differ from the paper's released code (akatigre/MASA-RL, ``masa_ray_trainer.py`` and
``masa_naive.py``):

- Selection ranks by the full meta reward (strictly above `min_reward`); the reference ranks by the
  notion score alone (kept at >= 0.2), so a trajectory with a badly wrong pass rate could be cloned.
- The written pass_rate is the integer count 0..G the meta prompt asks for; the reference writes the
  fraction 0..1, contradicting its own prompt's integer scale.
- The written solution_length is the mean over *correct* rollouts; the reference divides the sum of
  correct lengths by the number of *all* rollouts (shrinking it by the pass rate). When none is
  correct we use the mean of all rollouts: the length the model actually spends, which is what the
  cutoff budget derives from, rather than 0.
- The target is the canonical JSON (``meta.replace_meta_values``), not a Python dict repr.
- Rounding is half-up (``floor(x + 0.5)``), not Python's banker's rounding.

Cloning them (ExpertConfig.mode): "joint" adds bc_coef x BC to every optimizer step; "phase" is the
reference's meta SFT (``meta_sft_fit``, off in its launch script): experts join a FIFO buffer and each
full batch is cloned in `steps` full-batch steps at its own LR (`phase_batches`, `phase_lr`). The
reference keeps only one batch per RL step and empties its buffer each epoch; we clone every full batch
the buffer holds (so it never exceeds one batch) and carry it across the whole run.

Shapes: B prompts, G solution rollouts, Gm meta rollouts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from masa.algo.meta import replace_meta_values


def select_experts(meta_rewards: Tensor, valid: Tensor, *, min_reward: float) -> Tensor:
    """Index of each prompt's expert meta rollout, or -1 when none beats `min_reward`.

    meta_rewards: [B, Gm] float; valid: [B, Gm] bool (parsed, real rows)  ->  [B] long.
    Ties go to the lowest index (deterministic).
    """
    if meta_rewards.shape != valid.shape or meta_rewards.dim() != 2:
        raise ValueError(f"meta_rewards and valid must both be [B, Gm], got {tuple(meta_rewards.shape)} "
                         f"and {tuple(valid.shape)}")
    # float64: a float32 comparison would round a threshold such as 0.9999999999999999 up to 1.0
    r = torch.where(valid, meta_rewards.to(torch.float64), torch.full_like(meta_rewards, -torch.inf,
                                                                           dtype=torch.float64))
    best, idx = r.max(-1)  # first maximal index on ties
    return torch.where(best > min_reward, idx, torch.full_like(idx, -1))


def _round_half_up(x: Tensor) -> Tensor:
    return torch.floor(x + 0.5).to(torch.int64)


def observed_targets(correct: Tensor, lengths: Tensor, valid: Tensor, *,
                     n_solution: int) -> tuple[Tensor, Tensor]:
    """The values an expert target states: integer pass count of G and a length in tokens.

    correct, valid: [B, G] bool; lengths: [B, G] tokens  ->  pass_rate [B] long in 0..G, solution_length
    [B] long >= 1 (mean over correct rows, else over all valid rows; 1 for a prompt with no rows).
    """
    ok = correct & valid
    n = valid.sum(-1)
    pass_rate = _round_half_up(ok.sum(-1).to(torch.float32) / n.clamp(min=1) * n_solution)
    lens = lengths.to(torch.float32)
    n_ok = ok.sum(-1)
    mean_ok = torch.where(ok, lens, 0.0).sum(-1) / n_ok.clamp(min=1)
    mean_all = torch.where(valid, lens, 0.0).sum(-1) / n.clamp(min=1)
    length = _round_half_up(torch.where(n_ok > 0, mean_ok, mean_all)).clamp(min=1)
    return pass_rate, length


def expert_text(meta_text: str, *, pass_rate: int, solution_length: int) -> str:
    """The behaviour-cloning target: the chosen meta response with the observed values written in."""
    return replace_meta_values(meta_text, pass_rate=pass_rate, solution_length=solution_length)


def phase_batches(n_buffered: int, n_new: int, *, batch: int) -> tuple[list[list[int]], list[int]]:
    """Which experts each SFT phase clones, first in first out, and which stay in the buffer.

    Indices 0..n_buffered-1 are the carried buffer (oldest first), n_buffered..n_buffered+n_new-1 the
    round's new experts in shard order. Returns (full batches of `batch` indices in order, the rest).
    """
    if min(n_buffered, n_new) < 0 or batch < 1:
        raise ValueError(f"need n_buffered, n_new >= 0 and batch >= 1; got {n_buffered}, {n_new}, {batch}")
    order = list(range(n_buffered + n_new))
    n_full = len(order) // batch * batch
    return [order[i:i + batch] for i in range(0, n_full, batch)], order[n_full:]


def phase_lr(step: int, *, steps: int, lr: float, warmup_ratio: float = 0.1) -> float:
    """LR of optimizer step `step` (0-based) of an SFT phase of `steps` steps: verl's SFT trainer schedule
    (``get_cosine_schedule_with_warmup``, warmup int(steps x warmup_ratio) steps, half a cosine to 0).

        step < W:  lr x step / max(1, W)
        else:      lr x 0.5 x (1 + cos(pi x (step - W) / max(1, steps - W)))
    """
    if not 0 <= step < steps:
        raise ValueError(f"step must be in 0..{steps - 1}, got {step}")
    warm = int(steps * warmup_ratio)
    if step < warm:
        return lr * step / max(1, warm)
    return lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, steps - warm))))
