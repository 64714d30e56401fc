"""Predictive gating (MASA-efficient): skip the solution rollouts of prompts predicted trivial or unsolvable.

Shapes: B prompts, Gm meta rollouts per prompt, G = n_solution solution rollouts per prompt.

Per prompt, the meta path's parsed `pass_rate` predictions (integers 0..G, see `masa.algo.meta`) are reduced
to their median over the valid ones; the prompt is skipped when the median is <= low or >= high (defaults
0 and G): its G solutions would all be wrong or all right, so GRPO's group-normalised advantage would be 0
for every one of them and their rollout would buy no gradient. Gating is switched on only once the meta path
has proven reliable, and a share of the gated prompts is still rolled out so that reliability keeps being
measured on exactly the prompts gating acts on.

    reliable  = rounds >= min_rounds  and  mean(MAE of the last `window` rounds) < mae_threshold
                and  precision of the last `window` rounds >= min_precision
                and  signal loss of the last `window` rounds <= max_signal_loss
    skip_b    = reliable and has_pred_b and (median_b <= low or median_b >= high) and not explored_b
    MAE       = mean_b |median_b - observed correct count_b| / G   over rolled-out prompts with a prediction
                (the scoring step's `meta_pass_rate_mae_median`: the error of what gating acts on, not the
                larger per-sample error, which also charges the spread of the sampled predictions)
    precision = hits / candidates, pooled over the window: candidates are the rolled-out prompts that
                `gate_mask` would skip, hits those whose observed count lay on the skipped side (<= low or
                >= high: with the defaults, the zero-variance groups that gating exists to skip)
    loss      = the estimated share of the rolled-out prompts' mixed groups (0 < correct < G: GRPO's only
                signal) that the gate skips or would skip, pooled over the window (`signal_loss`)

Why precision as well as MAE: a meta path that predicts 0 for every prompt has an MAE equal to the mean
pass rate, below any fixed threshold on hard data, and it would then gate every prompt, the solvable ones
with them. Measured on the toy (docs/report.md, "Gating on a constant"): the prompts the meta path would
have gated were all-wrong at 0.62-0.77 against 0.58-0.64 for all prompts, barely above chance, while its
MAE had passed the switch.
Why the signal loss as well as precision: precision is read against the share of zero-variance groups,
and where that share is itself above `min_precision` (a hard dataset, or an easy one late in training) the
same constant passes it too, skipping every mixed group with the rest. The loss asks what gating exists
not to do: throw away the groups GRPO learns from. On the toy the meta path's gate would have thrown away
26-48% of them, a gate that knew each problem's difficulty cell 2-6% (docs/report.md, "What a gate could
skip").

Vanilla GRPO has no gating (DAPO's dynamic sampling filters all-0/all-G groups *after* rolling them out).

How this differs from the paper's released code (akatigre/MASA-RL, masa_train/masa_ray_trainer.py as stored
at 80b3cfa): that trainer has no gating path at all; every prompt's G solutions are rolled out, and meta
predictions reach the solution path only through `meta_feedin` (one randomly chosen meta JSON pasted into the
solution prompt). We follow the paper's description instead, and add what a production loop needs:
- the *median* of the group (average of the two middle values for an even count), not one random sample,
  so a single degenerate meta rollout cannot gate a prompt; prompts with no parsable prediction are never
  gated (a malformed meta output must not cost the prompt its training signal);
- an explicit reliability switch (min_rounds, windowed MAE) instead of gating from step 0, when the meta
  path's predictions are noise;
- exploration of a share of gated prompts, seeded per round (`round_generator`) so a resumed or re-run
  pipeline step makes identical decisions.
Pure: torch + stdlib; scalar history in Python floats, per-prompt decisions as tensors without host syncs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from masa.algo.gate_switch import signal_loss  # torch-free, so the report step can pool it too


def median_prediction(pred: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Median over the meta group of the valid predictions.

    pred: [B, Gm] (any numeric dtype); valid: [B, Gm] bool. Returns (median [B] float64, has_pred [B] bool).
    An even count takes the mean of the two middle values; rows without a valid prediction get NaN.
    """
    if pred.dim() != 2 or valid.shape != pred.shape:
        raise ValueError(f"need pred [B, Gm] and valid of the same shape; got {tuple(pred.shape)} and "
                         f"{tuple(valid.shape)}")
    valid = valid.bool()
    # Invalid entries sort last (+inf), so the k valid values of a row occupy its first k sorted slots.
    x = torch.where(valid, pred.to(torch.float64), math.inf)
    srt, _ = torch.sort(x, dim=-1)
    k = valid.sum(dim=-1)
    lo = torch.clamp((k - 1) // 2, min=0)
    hi = torch.clamp(k // 2, max=pred.shape[-1] - 1)
    mid = (srt.gather(-1, lo[:, None]) + srt.gather(-1, hi[:, None])).squeeze(-1) / 2
    has = k > 0
    return torch.where(has, mid, math.nan), has


def gate_mask(median: Tensor, has_pred: Tensor, *, n_solution: int, low: float = 0,
              high: float | None = None) -> Tensor:
    """True where a prompt's solution rollouts are skipped: has_pred and (median <= low or median >= high).

    median, has_pred: [B] from `median_prediction`; high defaults to n_solution (G). Returns [B] bool.
    """
    high = n_solution if high is None else high
    if not 0 <= low < high <= n_solution:
        raise ValueError(f"need 0 <= low < high <= n_solution; got low={low}, high={high}, "
                         f"n_solution={n_solution}")
    if median.shape != has_pred.shape or median.dim() != 1:
        raise ValueError(f"median and has_pred must both be [B]; got {tuple(median.shape)} and "
                         f"{tuple(has_pred.shape)}")
    # NaN medians (no prediction) compare False, and has_pred excludes them explicitly as well.
    return has_pred.bool() & ((median <= low) | (median >= high))


def gating_active(mae_history: Sequence[float], *, min_rounds: int, window: int, mae_threshold: float,
                  precision_history: Sequence[tuple[int, int]] = (), min_precision: float = 0.0,
                  signal_history: Sequence[tuple[int, int, int, int]] = (), max_signal_loss: float = 1.0) -> bool:
    """Whether gating is on this round, from earlier rounds' pass-rate MAEs and gate precision (oldest first).

    On once at least max(min_rounds, 1) rounds were measured and the mean of the last `window` of them (all,
    if fewer) is below `mae_threshold`. A round with no measured prompt must not be appended (it has no MAE).
    With min_precision > 0, also only once the last `window` entries of `precision_history` ((hits,
    candidates) per round, `gate_precision`), pooled, have at least one candidate and hits / candidates >=
    min_precision: no evidence of what the gate would skip keeps it off. With max_signal_loss < 1, also
    only once the `signal_loss` of the last `window` entries of `signal_history` is known and at most
    max_signal_loss.
    """
    if min_rounds < 0 or window < 1:
        raise ValueError(f"need min_rounds >= 0 and window >= 1; got {min_rounds}, {window}")
    if not 0 <= min_precision <= 1:
        raise ValueError(f"min_precision must be in [0, 1], got {min_precision}")
    if not 0 <= max_signal_loss <= 1:
        raise ValueError(f"max_signal_loss must be in [0, 1], got {max_signal_loss}")
    bad = [i for i, v in enumerate(mae_history) if not (math.isfinite(v) and 0 <= v <= 1)]
    if bad:
        raise ValueError(f"mae_history entries must be finite fractions in [0, 1]; bad at rounds {bad}")
    bad = [i for i, (h, c) in enumerate(precision_history) if not 0 <= h <= c]
    if bad:
        raise ValueError(f"precision_history entries must be (hits, candidates) with 0 <= hits <= candidates; "
                         f"bad at rounds {bad}")
    if len(mae_history) < max(min_rounds, 1):
        return False
    recent = list(mae_history)[-window:]
    if sum(recent) / len(recent) >= mae_threshold:
        return False
    if max_signal_loss < 1:
        loss = signal_loss(list(signal_history)[-window:])
        if loss is None or loss > max_signal_loss:
            return False
    if min_precision <= 0:
        return True
    recent_gates = list(precision_history)[-window:]
    hits, candidates = sum(h for h, _ in recent_gates), sum(c for _, c in recent_gates)
    return candidates > 0 and hits / candidates >= min_precision


def gate_precision(median: Tensor, has_pred: Tensor, observed: Tensor, rolled_out: Tensor, *, n_solution: int,
                   low: float = 0, high: float | None = None) -> tuple[Tensor, Tensor]:
    """How many of the rolled-out prompts that `gate_mask` would skip were on the skipped side: (hits,
    candidates), long scalars.

    median, has_pred: [B] from `median_prediction`; observed: [B] correct solutions counted out of G (any
    value where not rolled out); rolled_out: [B] bool. A candidate predicted low (median <= low) is a hit
    when its observed count is <= low, one predicted high when it is >= high (default 0 and G: the hits are
    the all-wrong and all-right groups, whose GRPO advantage is 0). While gating is on, the rolled-out
    candidates are the explored ones.
    """
    high = n_solution if high is None else high
    cand = gate_mask(median, has_pred, n_solution=n_solution, low=low, high=high) & rolled_out.bool()
    obs = observed.to(torch.float64)
    hit = cand & (((median <= low) & (obs <= low)) | ((median >= high) & (obs >= high)))
    return hit.sum(), cand.sum()


def gate_signal(median: Tensor, has_pred: Tensor, observed: Tensor, rolled_out: Tensor, *, n_solution: int,
                low: float = 0, high: float | None = None) -> tuple[Tensor, Tensor]:
    """Of the rolled-out prompts, how many of those `gate_mask` would skip had a mixed group, and how many
    had one at all: (mixed_candidates, mixed), long scalars, for `signal_loss`.

    Arguments as `gate_precision`. A group is mixed when 0 < observed < G: some solutions right, some
    wrong, the only groups whose GRPO advantages are not all 0.
    """
    cand = gate_mask(median, has_pred, n_solution=n_solution, low=low, high=high) & rolled_out.bool()
    obs = observed.to(torch.float64)
    mixed = rolled_out.bool() & (obs > 0) & (obs < n_solution)
    return (cand & mixed).sum(), mixed.sum()


def pass_rate_mae(median: Tensor, has_pred: Tensor, observed: Tensor, rolled_out: Tensor, *,
                  n_solution: int) -> tuple[Tensor, Tensor]:
    """This round's mean |median prediction - observed correct count| / G, and how many prompts it covers.

    median, has_pred: [B] from `median_prediction`; observed: [B] correct solutions *counted* out of G, the
    prediction's unit (i.e. `masa.algo.rewards.observed_pass_rate(...) * n_solution`; any value where not
    rolled out); rolled_out: [B] bool. Returns (mae scalar float64, count scalar long); the MAE is
    NaN when count is 0, and the caller then appends nothing to the history.
    """
    if n_solution < 1:
        raise ValueError(f"n_solution must be >= 1, got {n_solution}")
    use = has_pred.bool() & rolled_out.bool()
    err = torch.where(use, (median - observed.to(torch.float64)).abs() / n_solution, 0.0)
    count = use.sum()
    return err.sum() / count, count


def round_generator(seed: int, round_index: int) -> torch.Generator:
    """A CPU generator for one round's exploration draw, a pure function of (seed, round).

    Pipeline steps run as separate processes and may be retried, so the draw must not depend on a
    generator's history: re-running round r with the same seed reproduces its decisions exactly.
    """
    # Mix with a large odd constant so (seed, r) and (seed + 1, r - 1) do not collide.
    return torch.Generator(device="cpu").manual_seed((seed * 0x9E3779B1 + round_index) % (2**63))


def apply_exploration(skip: Tensor, *, explore_share: float, generator: torch.Generator) -> Tensor:
    """Un-skip a share of the skipped prompts, chosen at random from `generator`; returns the new [B] mask.

    skip: [B] bool. The number explored is explore_share * n_skipped with stochastic rounding (floor, plus
    one with probability equal to the fraction), so small batches still explore at the configured rate on
    average. Exactly B + 1 uniforms are drawn whatever `skip` holds, so the generator advances the same way
    on every run. No host sync: everything stays a tensor.
    """
    if not 0.0 <= explore_share <= 1.0:
        raise ValueError(f"explore_share must be in [0, 1], got {explore_share}")
    if skip.dim() != 1:
        raise ValueError(f"skip must be [B], got shape {tuple(skip.shape)}")
    skip = skip.bool()
    u = torch.rand(skip.shape[0] + 1, generator=generator, dtype=torch.float64,
                   device=generator.device).to(skip.device)
    keys, coin = u[:-1], u[-1]
    n_target = explore_share * skip.sum().to(torch.float64)
    n_explore = torch.floor(n_target) + (coin < n_target - torch.floor(n_target)).to(torch.float64)
    # Rank the skipped prompts by their random key (non-skipped ones sort last); explore the first n.
    order = torch.argsort(torch.where(skip, keys, math.inf))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(skip.shape[0], device=skip.device)
    return skip & ~(rank < n_explore)


def gating_decision(pred_pass: Tensor, valid: Tensor, mae_history: Sequence[float], *, n_solution: int,
                    low: float = 0, high: float | None = None, min_rounds: int, window: int,
                    mae_threshold: float, explore_share: float, generator: torch.Generator,
                    precision_history: Sequence[tuple[int, int]] = (), min_precision: float = 0.0,
                    signal_history: Sequence[tuple[int, int, int, int]] = (), max_signal_loss: float = 1.0
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """One round's gating: returns (skip [B] bool, median [B], has_pred [B]) from meta predictions [B, Gm].

    While gating is inactive nothing is skipped, but the medians are still returned so the caller can
    compute this round's `pass_rate_mae` and grow the history that switches gating on.
    """
    median, has = median_prediction(pred_pass, valid)
    if not gating_active(mae_history, min_rounds=min_rounds, window=window, mae_threshold=mae_threshold,
                         precision_history=precision_history, min_precision=min_precision,
                         signal_history=signal_history, max_signal_loss=max_signal_loss):
        return torch.zeros_like(has), median, has
    skip = gate_mask(median, has, n_solution=n_solution, low=low, high=high)
    return apply_exploration(skip, explore_share=explore_share, generator=generator), median, has
