"""Frozen, validated settings of the algorithm (GRPO / MASA / MASA-efficient).

These are plain data: the pure functions in `masa.algo` take explicit scalars, and the steps
(`masa.steps`) unpack these dataclasses into those scalars. Defaults follow the paper where it gives
one (arXiv 2510.03259, Sec. 4 and App. B).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from masa.configbase import check, raise_if

Algorithm = Literal["grpo", "masa", "masa-efficient"]
# how experts are cloned: "joint" adds bc_coef x BC to every optimizer step's loss; "phase" buffers them
# across rounds and clones each full batch in separate steps at its own LR (the released code's meta SFT)
EXPERT_MODES = ("joint", "phase")
# whose AdamW moments the expert phase steps on: "shared" with the policy (the released code), or "own"
PHASE_MOMENTS = ("shared", "own")


@dataclass(frozen=True)
class RewardConfig:
    """Meta-reward weights (pass rate, length, notion) and the length-reward bound convention."""

    weight_pass_rate: float = 1.0
    weight_length: float = 1.0
    weight_notion: float = 1.0
    # The reference code uses strict bounds (min < L < max); we default to the inclusive range.
    length_strict: bool = False
    meta_reward: str = "weighted-mean"
    # "exponential" (paper) pays the mode of the observed count, "linear" its median (the MAE's optimum)
    pass_rate_reward: str = "exponential"

    def __post_init__(self) -> None:
        p: list[str] = []
        for k in ("weight_pass_rate", "weight_length", "weight_notion"):
            check(getattr(self, k) >= 0, k, "must be >= 0", p)
        check(self.weight_pass_rate + self.weight_length + self.weight_notion > 0, "weight_*",
              "at least one meta-reward weight must be positive", p)
        from masa.algo.rewards import (  # lazy: keeps torch out of config loading
            META_REWARDS,
            PASS_RATE_REWARDS,
        )

        check(self.meta_reward in META_REWARDS, "meta_reward",
              f"unknown meta reward {self.meta_reward!r}; valid: {', '.join(META_REWARDS.names())}", p)
        check(self.pass_rate_reward in PASS_RATE_REWARDS, "pass_rate_reward",
              f"unknown pass-rate reward {self.pass_rate_reward!r}; valid: {', '.join(PASS_RATE_REWARDS.names())}",
              p)
        raise_if(p)


@dataclass(frozen=True)
class AdvantageConfig:
    """Group-relative advantages: estimator name (masa.algo.advantages.ESTIMATORS) and std convention."""

    estimator: str = "grpo"  # "grpo" (divide by std) or "drgrpo" (mean-centred only)
    eps: float = 1e-6
    # Bessel-corrected std (n - 1), as verl's torch.std; False uses the population std (n).
    unbiased_std: bool = True
    # "sequence": every token of a meta rollout gets its meta reward's advantage (GRPO, the paper);
    # "per-field": the tokens of each predicted value get that value's own reward's advantage
    # (masa.algo.advantages, "Per-field credit"). Solution rollouts are unaffected.
    meta_credit: str = "sequence"

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.eps > 0, "eps", "must be > 0", p)
        from masa.algo.advantages import (  # lazy: keeps torch out of plain config loading
            ESTIMATORS,
            META_CREDITS,
        )

        check(self.estimator in ESTIMATORS, "estimator",
              f"unknown advantage estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS.names())}", p)
        check(self.meta_credit in META_CREDITS, "meta_credit",
              f"unknown meta credit {self.meta_credit!r}; valid: {', '.join(META_CREDITS)}", p)
        raise_if(p)


@dataclass(frozen=True)
class GatingConfig:
    """Predictive gating (MASA-efficient): skip solution rollouts of prompts predicted trivial/unsolvable."""

    enabled: bool = True
    # Skip when the median predicted pass rate (0..G; a half-integer for an even count) is <= low or
    # >= high; None means 0 / G.
    low: int | None = None
    high: int | None = None
    # Turn on only after `min_rounds` rounds and once the running pass-rate MAE (as a fraction of G,
    # over the last `window` rounds) is below `mae_threshold`.
    min_rounds: int = 2
    window: int = 3
    mae_threshold: float = 0.2
    # ... and once, pooled over the same window, at least this share of the rolled-out prompts it would have
    # skipped were on the skipped side (all wrong or all right): the MAE alone lets a meta path that predicts
    # 0 everywhere gate every prompt of a hard dataset (masa.algo.gating). 0 turns the check off.
    min_precision: float = 0.8
    # ... and once, pooled over the same window, the gate skipped (or would have skipped) at most this share
    # of the rolled-out prompts' mixed groups, GRPO's only signal (masa.algo.gating.signal_loss): where most
    # groups are all wrong (or all right), precision passes for a constant too. 1 turns the check off.
    max_signal_loss: float = 0.2
    # Share of gated prompts still rolled out, so the meta path's error keeps being measured.
    explore_share: float = 0.1

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.min_rounds >= 0, "min_rounds", "must be >= 0", p)
        check(self.window >= 1, "window", "must be >= 1", p)
        check(0 < self.mae_threshold <= 1, "mae_threshold", "must be in (0, 1]", p)
        check(0 <= self.min_precision <= 1, "min_precision", "must be in [0, 1]", p)
        check(0 <= self.max_signal_loss <= 1, "max_signal_loss", "must be in [0, 1]", p)
        check(0 <= self.explore_share <= 1, "explore_share", "must be in [0, 1]", p)
        check(self.low is None or self.high is None or self.low < self.high, "low", "must be < high", p)
        raise_if(p)

    def bounds(self, n_solution: int) -> tuple[int, int]:
        """(low, high) for `masa.algo.gating.gate_mask`, with None resolved to 0 and G = n_solution."""
        return (0 if self.low is None else self.low, n_solution if self.high is None else self.high)


@dataclass(frozen=True)
class CutoffConfig:
    """Early cutoff (MASA-efficient): per-prompt budget ceil(multiplier * predicted length)."""

    enabled: bool = True
    multiplier: float = 2.0
    min_tokens: int = 16
    # What the meta path is rewarded against where cutoff stopped solutions. "all" (the paper's reading):
    # every solution, a cut one counting as failing. "uncut" (ours): the solutions that ran to their end, a
    # prompt cut whole giving its meta rows no target, as a gated prompt's; so a too-short length
    # prediction cannot make its own "pass rate 0" true (docs/report.md, "Cutoff on an uncalibrated
    # length prediction").
    meta_targets: Literal["all", "uncut"] = "all"
    # Reliability switch (ours): cutoff acts once, pooled over the last `window` rounds that ran without
    # it, its budgets would have cut at most this share of the passing solutions. 1 turns the switch off:
    # cutoff from the first round, as the paper describes it (masa.algo.cutoff.cutoff_active).
    max_cut_passing: float = 1.0
    window: int = 2

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.multiplier > 0, "multiplier", "must be > 0", p)
        check(self.min_tokens >= 1, "min_tokens", "must be >= 1", p)
        check(0 <= self.max_cut_passing <= 1, "max_cut_passing", "must be in [0, 1]", p)
        check(self.window >= 1, "window", "must be >= 1", p)
        raise_if(p)


@dataclass(frozen=True)
class ExpertConfig:
    """Expert meta trajectories cloned by behaviour cloning (MASA)."""

    enabled: bool = True
    # A prompt's best meta rollout becomes a target only if its meta reward is strictly above this.
    min_reward: float = 0.5
    bc_coef: float = 0.1
    # Weight, inside the BC token mean, of the tokens spelling the target's pass_rate and solution_length
    # digits (1 = the paper's plain BC). They carry the whole calibration signal in ~2 of ~50 tokens.
    value_weight: float = 1.0
    # "joint" (default): bc_coef x BC of the round's experts inside every optimizer step of the round.
    # "phase" (the released code's meta SFT, off in its launch script): experts join a FIFO buffer carried
    # across rounds; each time it holds `phase_batch` of them, after the round's policy steps,
    # `phase_steps` full-batch BC steps at `phase_lr` (cosine decay, masa.algo.experts.phase_lr) train on
    # the oldest `phase_batch`; bc_coef is then unused. Defaults: verl's SFT trainer (256, 4 epochs, 1e-5).
    mode: str = "joint"
    phase_batch: int = 256
    phase_steps: int = 4
    phase_lr: float = 1e-5
    # Phase mode only: coefficient of a per-token KL (k3) on the round's solution rollouts to the policy
    # as the phase found it, added to each phase step. The meta SFT then cannot buy calibration with
    # the solutions (docs/toy.md, "Shorter predictions", 5.). 0 = off, as the released code.
    phase_anchor: float = 0.0
    # Phase mode only: "shared" (the released code) steps the phase on the policy's AdamW moments, so the
    # clone's gradients, several times the policy's, stay in the second moment and shrink every later
    # policy step (measured on the toy: the policy's per-parameter Adam denominator 1.7x GRPO's, median);
    # "own" keeps a second set of moments for the phase, carried across rounds with the optimizer state
    # (masa.train.phase, docs/training.md)
    phase_moments: str = "shared"
    # Experts are picked in the first `rounds` rounds only (0: every round, as released); later rounds
    # train the meta path on its reward alone. On the toy the meta path's calibration comes from the
    # cloning and levels off after ~10 rounds while its cost to the solutions keeps growing
    # (docs/report.md, "Three times the rounds"). In phase mode experts still buffered stay uncloned.
    rounds: int = 0

    def __post_init__(self) -> None:
        p: list[str] = []
        check(0 <= self.min_reward <= 1, "min_reward", "must be in [0, 1]", p)
        check(self.rounds >= 0, "rounds", "must be >= 0 (0: every round)", p)
        check(self.bc_coef >= 0, "bc_coef", "must be >= 0", p)
        check(self.value_weight >= 0, "value_weight", "must be >= 0", p)
        check(self.mode in EXPERT_MODES, "mode",
              f"unknown expert mode {self.mode!r}; valid: {', '.join(EXPERT_MODES)}", p)
        check(self.phase_batch >= 1, "phase_batch", "must be >= 1", p)
        check(self.phase_steps >= 1, "phase_steps", "must be >= 1", p)
        check(self.phase_lr > 0, "phase_lr", "must be > 0", p)
        check(self.phase_anchor >= 0, "phase_anchor", "must be >= 0", p)
        check(self.phase_anchor == 0 or self.mode == "phase", "phase_anchor", "needs mode 'phase'", p)
        check(self.phase_moments in PHASE_MOMENTS, "phase_moments",
              f"unknown phase moments {self.phase_moments!r}; valid: {', '.join(PHASE_MOMENTS)}", p)
        check(self.phase_moments == "shared" or self.mode == "phase", "phase_moments", "needs mode 'phase'", p)
        raise_if(p)


@dataclass(frozen=True)
class AlgorithmConfig:
    name: Algorithm = "masa"
    n_solution: int = 8  # G, solution rollouts per prompt
    n_meta: int = 8  # meta rollouts per prompt
    reward: RewardConfig = field(default_factory=RewardConfig)
    advantage: AdvantageConfig = field(default_factory=AdvantageConfig)
    gating: GatingConfig = field(default_factory=GatingConfig)
    cutoff: CutoffConfig = field(default_factory=CutoffConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    # meta feed-in (v2 of the paper, "MAPR"; released `meta_feedin`): the MASA branches sample the meta
    # path first and append a hint built from one parsed prediction per prompt (its notions and length,
    # masa.algo.prompts.feedin_hint) to that prompt's solution prompt. Off by default; GRPO ignores it.
    meta_feedin: bool = False

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.name in ("grpo", "masa", "masa-efficient"), "name",
              f"must be one of grpo, masa, masa-efficient; got {self.name!r}", p)
        check(self.n_solution >= 2, "n_solution", "must be >= 2 (GRPO needs a group)", p)
        check(self.n_meta >= 1 or self.name == "grpo", "n_meta", "must be >= 1 for MASA", p)
        for k in ("low", "high"):
            v = getattr(self.gating, k)
            check(v is None or 0 <= v <= self.n_solution, f"gating.{k}", f"must be in 0..{self.n_solution}", p)
        raise_if(p)

    @property
    def uses_meta(self) -> bool:
        return self.name != "grpo"

    @property
    def efficient(self) -> bool:
        return self.name == "masa-efficient"
