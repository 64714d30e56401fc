"""Settings of the training step (one round of policy updates), frozen and validated.

Defaults follow the paper (arXiv 2510.03259, App. B): lr 1e-6 with 20 warm-up steps, AdamW with weight
decay 0.1, gradient clipping 1.0, asymmetric PPO clip (0.2 low, 0.28 high: "clip-higher"), no KL term and
no entropy bonus. `bc_coef` weights the behaviour-cloning loss on the round's expert meta trajectories
(the pipeline copies it from `AlgorithmConfig.expert.bc_coef`). With `bc_mode: phase` experts are not in
the policy steps: they are cloned in separate full-batch steps at `bc_phase_lr` (masa.train.phase).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from masa.algo.config import EXPERT_MODES, PHASE_MOMENTS
from masa.configbase import check, raise_if

LossAgg = Literal["token-mean", "seq-mean-token-sum", "seq-mean-token-mean"]


@dataclass(frozen=True)
class TrainConfig:
    # optimiser (AdamW with linear warm-up, then constant, as in the paper)
    lr: float = 1e-6
    warmup_steps: int = 20
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    # objective
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float = 10.0
    loss_agg: LossAgg = "token-mean"
    kl_coef: float = 0.0
    entropy_coef: float = 0.0
    bc_coef: float = 0.1
    # AlgorithmConfig.expert.mode and its phase settings (copied by the pipeline): "joint" = bc_coef x BC
    # in every step; "phase" = experts buffered across rounds, each full batch of `bc_phase_batch` cloned
    # after the round's steps in `bc_phase_steps` full-batch steps at `bc_phase_lr` (cosine decay)
    bc_mode: str = "joint"
    bc_phase_batch: int = 256
    bc_phase_steps: int = 4
    bc_phase_lr: float = 1e-5
    # KL (k3) coefficient, in each phase step, on a batch of the round's solution rollouts to the
    # policy as that phase batch found it (masa.train.phase.anchor_rows); 0 = none
    bc_phase_anchor: float = 0.0
    # the phase's AdamW moments: "shared" with the policy steps (the released code) or "own" (a second set,
    # saved beside the optimizer state; masa.train.phase.own_moments)
    bc_phase_moments: str = "shared"
    # reference model for the KL term; None = the round's input policy. Loaded only when kl_coef > 0.
    ref_model: str | None = None
    # recompute "old" log-probs with the training model before the update (the paper's released code,
    # verl's actor.compute_log_prob) instead of taking the rollout engine's; None = recompute for a
    # real model, take the engine's for the toy (masa.runner.settings.train_settings resolves it; a
    # TrainConfig used directly treats None as false)
    recompute_logprobs: bool | None = None
    # the policy is softmax(logits / temperature). Derived, not a run setting: the pipeline and `masa train`
    # train at 1 (masa.runner.settings.train_settings), because the engines record raw (T=1) log-probs
    temperature: float = 1.0
    # batching, two ways (docs/training.md, "How a step is counted"):
    # - samples_per_step None: steps_per_round optimizer steps over `epochs` shuffled passes of the
    #   round's samples, experts included, split evenly (same step count for GRPO and MASA);
    # - samples_per_step N (all ranks together): ceil(round's policy samples / N) steps, each sample
    #   used once, never cycled (verl's ppo_mini_batch_size with ppo_epochs 1, as the paper's code);
    #   a branch or round with more samples (MASA's meta path, a round gating made smaller) takes
    #   more (fewer) steps. steps_per_round must then stay 1.
    steps_per_round: int = 1
    samples_per_step: int | None = None
    epochs: int = 1
    # dynamic batch size: a micro-batch holds at most this many (prompt + response) tokens per rank
    max_tokens_per_microbatch: int = 8192
    # leave out of the forward/backward passes the policy samples whose every token has advantage 0
    # (zero-variance groups: 30-60% of real RL prompts), which add exactly 0 to the loss and gradient
    # when kl_coef and entropy_coef are 0; the step's statistics (entropy, clip fractions) are then over
    # the samples computed. verl and the paper's code compute them all.
    skip_inert: bool = True
    seed: int = 0  # derived per round by masa.runner.settings.train_settings (run seed * 1000 + round)
    # runtime
    zero_stage: Literal[2, 3] = 2
    gradient_checkpointing: bool | None = None  # None = on for GPU, off for CPU
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # auto = bf16 on GPU, fp32 on CPU
    save_every: int = 0  # save resumable DeepSpeed state every N optimizer steps (0 = never)

    @property
    def skips_inert(self) -> bool:
        """Whether inert samples are left out: only where they carry no KL or entropy gradient."""
        return self.skip_inert and self.kl_coef == 0 and self.entropy_coef == 0

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.lr > 0, "lr", "must be > 0", p)
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0", p)
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0", p)
        check(all(0 <= b < 1 for b in self.betas), "betas", "each must be in [0, 1)", p)
        check(self.adam_eps > 0, "adam_eps", "must be > 0", p)
        check(self.temperature > 0, "temperature", "must be > 0", p)
        check(self.grad_clip > 0, "grad_clip", "must be > 0 (use a large value to disable)", p)
        check(0 <= self.clip_low < 1, "clip_low", "must be in [0, 1)", p)
        check(self.clip_high >= 0, "clip_high", "must be >= 0", p)
        check(self.dual_clip > 1, "dual_clip", "must be > 1", p)
        for k in ("kl_coef", "entropy_coef", "bc_coef"):
            check(getattr(self, k) >= 0, k, "must be >= 0", p)
        check(self.bc_mode in EXPERT_MODES, "bc_mode",
              f"unknown expert mode {self.bc_mode!r}; valid: {', '.join(EXPERT_MODES)}", p)
        check(self.bc_phase_batch >= 1, "bc_phase_batch", "must be >= 1", p)
        check(self.bc_phase_steps >= 1, "bc_phase_steps", "must be >= 1", p)
        check(self.bc_phase_lr > 0, "bc_phase_lr", "must be > 0", p)
        check(self.bc_phase_anchor >= 0, "bc_phase_anchor", "must be >= 0", p)
        check(self.bc_phase_moments in PHASE_MOMENTS, "bc_phase_moments",
              f"unknown phase moments {self.bc_phase_moments!r}; valid: {', '.join(PHASE_MOMENTS)}", p)
        check(self.steps_per_round >= 1, "steps_per_round", "must be >= 1", p)
        check(self.samples_per_step is None or self.samples_per_step >= 1, "samples_per_step",
              "must be >= 1 or null", p)
        check(self.epochs >= 1, "epochs", "must be >= 1", p)
        check(self.samples_per_step is None or self.steps_per_round == 1, "steps_per_round",
              "is derived from the round's samples when samples_per_step is set; leave it at 1", p)
        check(self.samples_per_step is None or self.epochs == 1, "epochs",
              "passes over the round apply only when samples_per_step is null; set one of them", p)
        check(self.max_tokens_per_microbatch >= 16, "max_tokens_per_microbatch", "must be >= 16", p)
        check(self.zero_stage in (2, 3), "zero_stage", f"must be 2 or 3; got {self.zero_stage!r}", p)
        check(self.save_every >= 0, "save_every", "must be >= 0", p)
        raise_if(p)
