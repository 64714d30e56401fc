"""Group-relative advantages (GRPO, Dr. GRPO) over dense, masked or flat (ragged) groups.

A group is one prompt's rollouts of one path: MASA normalises the solution group and the meta group
of a prompt separately (each is its own baseline), exactly as vanilla GRPO normalises its only group.

    grpo:    A_i = (r_i - mean(r)) / (std(r) + eps)        (DeepSeekMath, GRPO outcome supervision)
    drgrpo:  A_i =  r_i - mean(r)                          (Dr. GRPO, Liu et al. 2025: no std division)

Shapes: rewards [B, G] with a `mask` [B, G] (True = a real rollout); groups may have unequal sizes
after gating. Masked entries never influence the others and get advantage 0.

Choices, and where they differ from verl (which the paper's code uses):

- std is the unbiased (Bessel, n - 1) estimate by default, as verl's ``torch.std``; ``unbiased=False``
  gives the population std. With G = 8 the two differ by sqrt(8/7) ~ 7 % in scale.
- A group of fewer than two rollouts has no baseline: we give it advantage 0 and flag it zero-variance.
  verl instead uses mean 0 and std 1 for a singleton, which turns the raw reward into the advantage.
- A group whose rewards are all equal (spread <= 1e-6) is flagged zero-variance and gets exactly 0, not
  the float residue of (r - mean) / eps.
- The group statistics are taken in float64 (the advantages are returned in float32): in float32 the
  mean's rounding left a near-tied group's advantages lopsided, rewards 0.893992 / 0.894152 giving
  -0.9880 / +0.9873, a sum of -7e-4 where the estimator's is 0 (found by tests/test_advantages.py's
  property test, 2026-12-05).

Per-field credit (``meta_credit="per-field"``, ours; neither the paper nor verl has it): the meta reward
is a mean of three rewards, each decided by one value of the JSON prediction (pass_rate, solution_length,
math_notion), yet GRPO gives every token of a meta rollout the advantage of the sum. The pass-rate digit
is then pushed by the luck of the length and notion guesses too. Per-field credit gives the tokens of
each value the group advantage of that value's own reward and every other token (reasoning, keys) the
usual one:

    A_t = A(r_f)   for a token t of field f's value,     A(r_meta) otherwise     (A: the group estimator)

It trades a small bias (a value's tokens also shape the tokens after them) for a cleaner signal on the
tokens that carry the prediction. On the toy task it lowered the training error and spread of the
pass-rate guesses, and the held-out error only a little (docs/report.md, "The toy run").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from masa.algo.registry import Registry

_FLAT_SPREAD = 1e-6  # reward spread below which a group carries no learning signal

AdvantageFn = Callable[..., tuple[Tensor, Tensor]]
ESTIMATORS: Registry[AdvantageFn] = Registry("advantage estimator")


def _group_stats(rewards: Tensor, mask: Tensor, *, unbiased: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Deviations from the masked group mean [B, G] (0 at masked entries), std [B] (both float64) and the
    zero-variance flag [B]."""
    r = torch.where(mask, rewards.to(torch.float64), torch.zeros((), dtype=torch.float64))
    n = mask.sum(-1)
    mean = r.sum(-1) / n.clamp(min=1)
    dev = torch.where(mask, r - mean.unsqueeze(-1), torch.zeros((), dtype=torch.float64))
    dof = (n - 1 if unbiased else n).clamp(min=1)
    std = (dev.square().sum(-1) / dof).sqrt()
    hi = torch.where(mask, r, torch.full_like(r, -torch.inf)).amax(-1)
    lo = torch.where(mask, r, torch.full_like(r, torch.inf)).amin(-1)
    zero_var = (n < 2) | ((hi - lo) <= _FLAT_SPREAD)
    return dev, std, zero_var


def _finish(adv: Tensor, mask: Tensor, zero_var: Tensor) -> tuple[Tensor, Tensor]:
    keep = mask & ~zero_var.unsqueeze(-1)
    return torch.where(keep, adv, torch.zeros_like(adv)), zero_var


@ESTIMATORS.register("grpo")
def grpo(rewards: Tensor, mask: Tensor, *, eps: float, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """A = (r - mean) / (std + eps) per group.  rewards, mask: [B, G] -> ([B, G] float32, [B] bool)."""
    dev, std, zero_var = _group_stats(rewards, mask, unbiased=unbiased)
    return _finish((dev / (std.unsqueeze(-1) + eps)).to(torch.float32), mask, zero_var)


@ESTIMATORS.register("drgrpo")
def drgrpo(rewards: Tensor, mask: Tensor, *, eps: float, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """A = r - mean per group (no std division; eps and unbiased unused, kept for one signature)."""
    dev, _, zero_var = _group_stats(rewards, mask, unbiased=unbiased)
    return _finish(dev.to(torch.float32), mask, zero_var)


def group_advantages(rewards: Tensor, mask: Tensor | None = None, *, estimator: str = "grpo",
                     eps: float = 1e-6, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Advantages of each group with the named estimator.

    rewards: [B, G]; mask: [B, G] bool or None (all real)  ->  advantages [B, G] float32 (0 at
    masked entries and in zero-variance groups), zero_variance [B] bool.
    """
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, G], got shape {tuple(rewards.shape)}")
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    if mask.shape != rewards.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool of shape {tuple(rewards.shape)}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    fn = ESTIMATORS.get(estimator)
    if rewards.shape[-1] == 0:  # no rollouts at all (e.g. every prompt gated): nothing to normalise
        return torch.zeros(rewards.shape, dtype=torch.float32), torch.ones(rewards.shape[0], dtype=torch.bool)
    return fn(rewards, mask, eps=eps, unbiased=unbiased)


def pad_groups(values: Tensor, group_index: Tensor, *, n_groups: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Scatter flat per-row values into padded groups.

    values: [N]; group_index: [N] long in 0..B-1 (any order)  ->  padded [B, Gmax], mask [B, Gmax],
    slot [N] (each row's column, so ``padded[group_index, slot] == values``). B is `n_groups`
    (groups without rows are all-masked) or max(group_index) + 1.
    """
    if values.shape != group_index.shape or values.dim() != 1:
        raise ValueError(f"values and group_index must both be [N], got {tuple(values.shape)} and "
                         f"{tuple(group_index.shape)}")
    if n_groups is None:  # shapes must be known on the host (batch assembly, not a loss), hence int()
        n_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    order = torch.argsort(group_index, stable=True)
    counts = torch.bincount(group_index, minlength=n_groups)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(group_index)
    slot[order] = torch.arange(group_index.numel()) - starts[group_index[order]]
    width = int(counts.max()) if group_index.numel() else 0
    padded = torch.zeros(n_groups, width, dtype=values.dtype)
    mask = torch.zeros(n_groups, width, dtype=torch.bool)
    padded[group_index, slot] = values
    mask[group_index, slot] = True
    return padded, mask, slot


def flat_advantages(rewards: Tensor, group_index: Tensor, *, estimator: str = "grpo", eps: float = 1e-6,
                    unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Ragged form: rewards [N] of rows belonging to groups `group_index` [N]  ->  advantages [N]
    float32 and each row's group zero-variance flag [N] bool."""
    padded, mask, slot = pad_groups(rewards.to(torch.float32), group_index)
    adv, zero_var = group_advantages(padded, mask, estimator=estimator, eps=eps, unbiased=unbiased)
    return adv[group_index, slot], zero_var[group_index]


META_CREDITS = ("sequence", "per-field")  # how a meta rollout's advantage reaches its tokens (see above)


def flat_field_advantages(rewards: Tensor, group_index: Tensor, *, estimator: str = "grpo", eps: float = 1e-6,
                          unbiased: bool = True) -> Tensor:
    """Each field's reward normalised in its group on its own: rewards [N, F] of rows in groups
    `group_index` [N]  ->  advantages [N, F] float32 (column f = ``flat_advantages(rewards[:, f])``)."""
    if rewards.dim() != 2 or rewards.shape[0] != group_index.shape[0]:
        raise ValueError(f"rewards must be [N, F] with N = {group_index.shape[0]} rows, got {tuple(rewards.shape)}")
    cols = [flat_advantages(rewards[:, f], group_index, estimator=estimator, eps=eps, unbiased=unbiased)[0]
            for f in range(rewards.shape[1])]
    return torch.stack(cols, -1) if cols else rewards.new_zeros(rewards.shape, dtype=torch.float32)


def token_advantages(seq_adv: Tensor, field_adv: Tensor, token_field: Tensor) -> Tensor:
    """Per-token advantages under per-field credit.

    seq_adv: [N] (the whole reward's advantage); field_adv: [N, F]; token_field: [N, T] long, f in
    0..F-1 for a token of field f's value and -1 for any other token  ->  [N, T] float32.
    """
    if token_field.dim() != 2 or seq_adv.shape != token_field.shape[:1] or field_adv.shape[0] != seq_adv.shape[0]:
        raise ValueError(f"need seq_adv [N], field_adv [N, F], token_field [N, T]; got {tuple(seq_adv.shape)}, "
                         f"{tuple(field_adv.shape)}, {tuple(token_field.shape)}")
    if field_adv.shape[1] == 0:
        return seq_adv.to(torch.float32).unsqueeze(-1).expand(token_field.shape).clone()
    per_field = torch.gather(field_adv.to(torch.float32), 1, token_field.clamp(min=0))
    return torch.where(token_field >= 0, per_field, seq_adv.to(torch.float32).unsqueeze(-1))
