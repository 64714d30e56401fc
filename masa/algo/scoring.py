"""The MASA scoring math of one round, pure: meta-reward assembly, advantage groups, per-field credit, MAE.

The scoring step (`masa.runner.scoring`) reads the rollout shard, verifies the solutions and parses the
meta predictions; everything it then computes from those numbers lives here, over tensors and lists:

- `meta_scores`: each meta row's reward components (pass rate, length, notion) against what its
  prompt's solution rows did, per-field validity (a bad field zeroes only its own component, as the
  released `meta_cog.compute_score`), the combined meta reward, |k/G - observed| per row and the MAE of
  each prompt's *median* prediction (what predictive gating acts on, so what its reliability is judged by).
- `advantage_groups`: GRPO groups are (prompt, path); `solution_group` / `meta_group` name the ids.
- `credited_fields`: which fields get their own credit under `advantage.meta_credit = "per-field"`.
- `token_fields`: which field's value each response token overlaps.

How this differs from vanilla GRPO: a second path (meta) with its own groups and a reward computed from
the solution path's outcome; a meta row of a gated prompt (no solution rows) scores 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from masa.algo.advantages import pad_groups
from masa.algo.gating import gate_precision, gate_signal, median_prediction, pass_rate_mae
from masa.algo.meta import meta_field_spans
from masa.algo.rewards import (
    field_components,
    length_reward,
    meta_reward,
    observed_pass_rate,
    pass_rate_reward,
)

# meta reward component -> the JSON key whose value decides it
FIELD_KEYS = (("pass_rate", "pass_rate"), ("length", "solution_length"), ("notion", "math_notion"))


def solution_group(prompt: int) -> int:
    """The GRPO group id of a prompt's solution rows: 2 * prompt (even)."""
    return 2 * prompt


def meta_group(prompt: int) -> int:
    """The GRPO group id of a prompt's meta rows: 2 * prompt + 1 (odd)."""
    return 2 * prompt + 1


def is_meta_group(group: int) -> bool:
    """Whether a group id of `advantage_groups` is a meta group."""
    return group % 2 == 1


def advantage_groups(prompt_of: Sequence[int], is_meta: Sequence[bool]) -> Tensor:
    """One GRPO group per (prompt, path), normalised separately: [N] long group ids
    (`solution_group` / `meta_group` of each row's prompt)."""
    return torch.tensor([meta_group(p) if m else solution_group(p) for p, m in zip(prompt_of, is_meta, strict=True)],
                        dtype=torch.long)


@dataclass(frozen=True)
class MetaScores:
    """Per meta row ([M] each) unless noted."""

    reward: Tensor  # float, the combined meta reward (0 where not `parsed`)
    pass_rate: Tensor  # float, r_pass after per-field zeroing
    length: Tensor  # float, r_length after per-field zeroing
    notion: Tensor  # float, r_notion after per-field zeroing
    parsed: Tensor  # bool, at least one valid field and its prompt has solution rows
    has_pass_rate: Tensor  # bool, parsed with a valid pass_rate
    abs_err: Tensor  # float, |k/G - observed pass rate|
    median_mae: float | None  # mean over prompts of |median k - observed count| / G; None if no prompt has one
    gate_hits: int  # rolled-out prompts gating would skip whose observed count was on the skipped side
    gate_candidates: int  # rolled-out prompts gating would skip (masa.algo.gating.gate_precision)
    gate_mixed: int = 0  # of those, the ones with a mixed group (masa.algo.gating.gate_signal)
    mixed: int = 0  # rolled-out prompts with a mixed group (0 < correct < G)


def meta_scores(pred_k: Tensor, pred_len: Tensor, has_k: Tensor, has_len: Tensor, has_notion: Tensor,
                any_field: Tensor, r_notion: Tensor, prompt: Tensor, sol_ok: Tensor, sol_len: Tensor,
                sol_mask: Tensor, *, n_solution: int, length_strict: bool, variant: str, weight_pass_rate: float,
                weight_length: float, weight_notion: float, pass_rate_variant: str = "exponential",
                gate_low: float = 0, gate_high: float | None = None) -> MetaScores:
    """Score M meta rows of B prompts against the prompts' G solution rows.

    pred_k, pred_len: [M] long predicted correct count and length (any value where the field is invalid);
    has_k, has_len, has_notion: [M] bool field validity; any_field: [M] bool at least one valid field;
    r_notion: [M] float notion reward (text-based, `masa.algo.rewards.notion_rewards`); prompt: [M] long
    prompt index in [0, B), rows of a prompt in slot order; sol_ok, sol_len, sol_mask: [B, G] what each
    prompt's solution rows did (ok = rewarded 1), their lengths and which slots are real. gate_low,
    gate_high: gating's bounds (default 0 and G), for the precision of what it would skip.
    pass_rate_variant: the pass-rate reward's name (masa.algo.rewards.PASS_RATE_REWARDS).
    """
    B = sol_ok.shape[0]
    pk, pmask, slot = pad_groups(pred_k, prompt, n_groups=B)
    pL, _, _ = pad_groups(pred_len, prompt, n_groups=B)
    observed = observed_pass_rate(sol_ok, sol_mask)
    r_pass = pass_rate_reward(pk, observed, n_solution=n_solution, variant=pass_rate_variant)[prompt, slot]
    r_len = length_reward(pL, sol_len, sol_ok, strict=length_strict)[prompt, slot]
    parsed = any_field & sol_mask.any(-1)[prompt]
    # per field: an invalid field scores 0 in its own component only (masa.algo.rewards.field_components)
    r_pass, r_len, r_not = field_components(r_pass, r_len, r_notion, has_k, has_len, has_notion)
    reward = meta_reward(r_pass, r_len, r_not, parsed, variant=variant, weight_pass_rate=weight_pass_rate,
                         weight_length=weight_length, weight_notion=weight_notion)
    err = (pk.to(torch.float32) / n_solution - observed.unsqueeze(-1)).abs()[prompt, slot]
    pvalid, _, _ = pad_groups(has_k, prompt, n_groups=B)
    median, has = median_prediction(pk, pvalid & pmask)
    mae, count = pass_rate_mae(median, has, observed * n_solution, sol_mask.any(-1), n_solution=n_solution)
    correct, rolled_out = (sol_ok & sol_mask).sum(-1), sol_mask.any(-1)
    hits, candidates = gate_precision(median, has, correct, rolled_out, n_solution=n_solution, low=gate_low,
                                      high=gate_high)
    gate_mixed, mixed = gate_signal(median, has, correct, rolled_out, n_solution=n_solution, low=gate_low,
                                    high=gate_high)
    return MetaScores(reward, r_pass, r_len, r_not, parsed, has_k & parsed, err,
                      float(mae) if int(count) > 0 else None, int(hits), int(candidates), int(gate_mixed), int(mixed))


def credited_fields(*, variant: str, weight_pass_rate: float, weight_length: float,
                    weight_notion: float) -> list[tuple[str, str]]:
    """The (component, JSON key) pairs of FIELD_KEYS that get their own credit under per-field credit: those
    the configured meta reward pays for alone (a weight of 0, or a variant that ignores a field, leaves its
    tokens on the whole reward's advantage). Found by scoring each field alone (one-hot components)."""
    one = torch.eye(len(FIELD_KEYS))
    pays = meta_reward(one[:, 0], one[:, 1], one[:, 2], torch.ones(len(FIELD_KEYS), dtype=torch.bool),
                       variant=variant, weight_pass_rate=weight_pass_rate, weight_length=weight_length,
                       weight_notion=weight_notion)
    return [fk for fk, p in zip(FIELD_KEYS, (pays > 0).tolist(), strict=True) if p]


def token_fields(pieces: Sequence[str], keys: Sequence[str]) -> list[int]:
    """Index into `keys` of the field whose value each token overlaps, else -1.

    pieces: each response token decoded on its own. Spans are found in their concatenation, not in the
    row's text, so every character belongs to exactly one sampled token whatever the tokenizer's decoding
    quirks.
    """
    spans = meta_field_spans("".join(pieces))
    out, pos = [], 0
    for piece in pieces:
        a, b = pos, pos + len(piece)
        pos = b
        out.append(next((f for f, k in enumerate(keys) if k in spans and a < spans[k][1] and spans[k][0] < b), -1))
    return out
