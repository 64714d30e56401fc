"""Rewards of the two paths: verified correctness for solutions, self-alignment for meta predictions.

Shapes: B prompts, G solution rollouts, Gm meta rollouts per prompt. Solution statistics come as
[B, G] tensors with a `valid` mask (a prompt may have fewer than G solution rows, or none when it was
gated); predictions as [B, Gm].

Vanilla GRPO has only the solution reward. MASA (arXiv 2510.03259, Sec. 3, self-alignment rewards)
scores each meta prediction (k = predicted number correct of G, L = predicted length, notions N)
against what the same prompt's solution rollouts actually did:

    r_pass   = 0.01 ** |p - k / G|                      p = observed fraction correct ("exponential";
               "linear": 1 - |p - k / G|, whose expectation peaks at the median, not the mode)
    r_length = 1[min_c <= L <= max_c]                    over the lengths of CORRECT rollouts; 0 if none
    r_notion = |{n in N' : s(n) > 0}| / |N'|             N' = normalised N minus notions in the problem,
               s(n) = #correct rollouts using n - #incorrect rollouts using n;  0 if N' is empty
    r_meta   = (w_p r_pass + w_l r_length + w_n r_notion) / (w_p + w_l + w_n)      ("weighted-mean")

Each field is scored on its own (`field_components`): a missing or invalid field scores 0 in its
component only, the others keep theirs, as the released `meta_cog.compute_score` does (its sum / 3
counts a missing field as 0). Only a wholly unparsable prediction (no object, or no valid field)
scores 0 in every component.

How we differ from the paper's released code (akatigre/MASA-RL, `meta_cog.py`):

- Length bounds are inclusive by default (a single correct rollout gives min == max, and the strict
  reference test ``min < L < max`` can then never pay); ``strict=True`` reproduces the reference.
- Notions are matched as whole words on normalised text (lower-cased, every word singularised on both
  sides), not as raw substrings: "sum" no longer matches inside "summary", and "fractions" in a
  solution counts for the notion "fraction". Notions are removed when they appear (as whole words)
  in the *problem*, where the reference tested substring membership in the whole meta prompt (whose
  instruction text contains words such as "solution"). Duplicate notions count once, so repeating a
  good notion cannot raise the share.
- Pass-rate reward uses the run's G instead of a hard-coded 8. A "linear" variant (1 - |p - k/G|,
  `algorithm.reward.pass_rate_reward`) rewards the median instead of the mode (docs/algorithm.md).
- Solution rows cut off by early cutoff (finish_reason "cutoff") score 0 and count as incorrect in
  the observed statistics the meta path is rewarded against.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from masa.algo.registry import Registry

PASS_RATE_BASE = 0.01  # r_pass = base ** |p - k/G|: 1 for an exact guess, 0.01 when off by all of G

# ---------------------------------------------------------------- solution reward


def solution_reward(correct: Tensor, cutoff: Tensor) -> Tensor:
    """Verified correctness as a reward, 0 for rollouts stopped by early cutoff.

    correct, cutoff: [N] bool  ->  [N] float32 in {0, 1}.
    """
    return (correct & ~cutoff).to(torch.float32)


# ---------------------------------------------------------------- per-prompt observed statistics


def observed_pass_rate(correct: Tensor, valid: Tensor) -> Tensor:
    """Fraction of a prompt's valid solution rollouts that are correct.

    correct, valid: [B, G] bool  ->  [B] float32; 0 for a prompt with no valid rollout.
    """
    n = valid.sum(-1)
    return (correct & valid).sum(-1).to(torch.float32) / n.clamp(min=1)


def _correct_length_bounds(lengths: Tensor, correct: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """min and max length over correct rollouts, and whether any is correct: [B, G] -> 3 x [B]."""
    big = torch.iinfo(torch.int64).max
    lens = lengths.to(torch.int64)
    lo = lens.masked_fill(~correct, big).amin(-1)
    hi = lens.masked_fill(~correct, -1).amax(-1)
    return lo, hi, correct.any(-1)


# ---------------------------------------------------------------- meta reward components


PassRateRewardFn = Callable[[Tensor], Tensor]
PASS_RATE_REWARDS: Registry[PassRateRewardFn] = Registry("pass-rate reward")


@PASS_RATE_REWARDS.register("exponential")
def exponential_pass_rate(err: Tensor) -> Tensor:
    """0.01 ** err, the paper's: each count off of G = 8 multiplies the reward by 0.56, so under doubt
    the expected reward is highest at the likeliest count (the mode of the observed counts)."""
    return torch.pow(torch.tensor(PASS_RATE_BASE), err)


@PASS_RATE_REWARDS.register("linear")
def linear_pass_rate(err: Tensor) -> Tensor:
    """1 - err: its expected value is 1 - E|p - k/G|, highest at the median of the observed rate, the
    prediction that minimises the held-out MAE that the report and issue 15 measure (not the paper's)."""
    return 1.0 - err


def pass_rate_reward(predicted: Tensor, observed: Tensor, *, n_solution: int,
                     variant: str = "exponential") -> Tensor:
    """r_pass = f(|p - k/G|), f named by `variant`: "exponential" 0.01 ** err (paper Sec. 3), "linear"
    1 - err. 1 for an exact count, decaying with the error.

    predicted: [B, Gm] integer k in 0..G; observed: [B] fraction p in [0, 1]  ->  [B, Gm] in [0, 1].
    """
    err = (observed.unsqueeze(-1) - predicted.to(torch.float32) / n_solution).abs()
    return PASS_RATE_REWARDS.get(variant)(err)


def length_reward(predicted: Tensor, lengths: Tensor, correct: Tensor, *, strict: bool = False) -> Tensor:
    """r_length = 1 if the predicted length lies within the correct rollouts' length range, else 0.

    predicted: [B, Gm] tokens; lengths: [B, G] tokens; correct: [B, G] bool (False for invalid
    rows)  ->  [B, Gm] float32 in {0, 1}; 0 where no rollout is correct. `strict` uses the
    reference's open interval min < L < max.
    """
    lo, hi, any_ok = (t.unsqueeze(-1) for t in _correct_length_bounds(lengths, correct))
    pred = predicted.to(torch.int64)
    inside = (pred > lo) & (pred < hi) if strict else (pred >= lo) & (pred <= hi)
    return (inside & any_ok).to(torch.float32)


# ---------------------------------------------------------------- notions

_IRREGULAR = {"vertices": "vertex", "matrices": "matrix", "indices": "index", "radii": "radius",
              "foci": "focus", "axes": "axis", "formulae": "formula", "hypotheses": "hypothesis",
              "analyses": "analysis", "bases": "base", "criteria": "criterion", "polyhedra": "polyhedron"}
_KEEP = ("ss", "us", "is", "ics", "series", "species")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def singularize(word: str) -> str:
    """Singular of a lower-case English word by simple rules (identities -> identity, boxes -> box,
    fractions -> fraction); series, analysis, radius, combinatorics and words of <= 3 letters stay."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word.endswith(_KEEP):
        return word
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses", "oes")):
        return word[:-2]
    return word[:-1] if word.endswith("s") else word


def normalize_words(text: str) -> str:
    """Lower-cased text as space-separated singular words and single symbols, padded with spaces, so
    that ``" " + notion + " " in normalize_words(text)`` is a whole-word, plural-blind match."""
    return " " + " ".join(singularize(w) for w in _WORD.findall(text.lower())) + " "


def normalize_notions(notions: Sequence[str], problem: str) -> tuple[str, ...]:
    """Predicted notions normalised (lower-case, singular words), de-duplicated in order, minus
    those that appear as whole words in the problem (copying the problem earns nothing)."""
    norm_problem = normalize_words(problem)
    out: list[str] = []
    for n in notions:
        key = normalize_words(n).strip()
        if key and key not in out and f" {key} " not in norm_problem:
            out.append(key)
    return tuple(out)


def notion_rewards(predictions: Sequence[Sequence[str] | None], *, problem: str,
                   solution_texts: Sequence[str], solution_correct: Sequence[bool]) -> Tensor:
    """r_notion for each of one prompt's Gm meta predictions (None = parse failure -> 0).

    Every remaining notion scores +1 per correct rollout whose text uses it and -1 per incorrect one;
    r_notion is the share of notions with a positive score (0 when none remain).
    solution_texts, solution_correct: G entries  ->  [Gm] float32 in [0, 1].
    """
    if len(solution_texts) != len(solution_correct):
        raise ValueError(f"{len(solution_texts)} solution texts but {len(solution_correct)} correctness flags")
    texts = [normalize_words(t) for t in solution_texts]  # once per prompt, shared by all Gm
    out = torch.zeros(len(predictions), dtype=torch.float32)
    for j, notions in enumerate(predictions):
        kept = normalize_notions(notions or (), problem)
        if not kept:
            continue
        scores = [sum((1 if ok else -1) for t, ok in zip(texts, solution_correct, strict=True)
                      if f" {n} " in t) for n in kept]
        out[j] = sum(s > 0 for s in scores) / len(kept)
    return out


# ---------------------------------------------------------------- combining

MetaRewardFn = Callable[..., Tensor]
META_REWARDS: Registry[MetaRewardFn] = Registry("meta reward")


@META_REWARDS.register("weighted-mean")
def weighted_mean(r_pass: Tensor, r_length: Tensor, r_notion: Tensor, *, weight_pass_rate: float,
                  weight_length: float, weight_notion: float) -> Tensor:
    """(w_p r_pass + w_l r_length + w_n r_notion) / (w_p + w_l + w_n); equal weights = the paper."""
    total = weight_pass_rate + weight_length + weight_notion
    if min(weight_pass_rate, weight_length, weight_notion) < 0 or total <= 0:
        raise ValueError(f"meta-reward weights must be >= 0 with a positive sum, got "
                         f"{weight_pass_rate}, {weight_length}, {weight_notion}")
    return (weight_pass_rate * r_pass + weight_length * r_length + weight_notion * r_notion) / total


@META_REWARDS.register("pass-rate-only")
def pass_rate_only(r_pass: Tensor, r_length: Tensor, r_notion: Tensor, *, weight_pass_rate: float,
                   weight_length: float, weight_notion: float) -> Tensor:
    """Only the pass-rate term (an ablation: the signal gating relies on)."""
    return r_pass


def field_components(r_pass: Tensor, r_length: Tensor, r_notion: Tensor, has_pass_rate: Tensor,
                     has_length: Tensor, has_notion: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each component zeroed where its own field is missing or invalid (per-field scoring).

    r_*: [B, Gm] float; has_*: [B, Gm] bool  ->  the three components, [B, Gm] each. Combine with
    `meta_reward(..., parsed=has_pass_rate | has_length | has_notion)`.
    """
    return (torch.where(has_pass_rate, r_pass, torch.zeros_like(r_pass)),
            torch.where(has_length, r_length, torch.zeros_like(r_length)),
            torch.where(has_notion, r_notion, torch.zeros_like(r_notion)))


def meta_reward(r_pass: Tensor, r_length: Tensor, r_notion: Tensor, parsed: Tensor, *,
                variant: str = "weighted-mean", weight_pass_rate: float = 1.0, weight_length: float = 1.0,
                weight_notion: float = 1.0) -> Tensor:
    """Combine the components with the named variant; unparsed predictions score 0.

    r_*: [B, Gm] in [0, 1]; parsed: [B, Gm] bool  ->  [B, Gm] float32 in [0, 1].
    """
    r = META_REWARDS.get(variant)(r_pass, r_length, r_notion, weight_pass_rate=weight_pass_rate,
                                  weight_length=weight_length, weight_notion=weight_notion)
    return torch.where(parsed, r, torch.zeros_like(r))
