"""Each step's settings, derived from the run's `RunConfig`, its branch and its round: in one place.

The pipeline's steps (`masa.steps`) and their command-line twins (`masa rollout`, `masa train`,
`masa benchmark`) both call these functions, so a step run alone uses exactly the settings the
pipeline gives it. Derived values (a branch's algorithm, a round's training seed, an engine's
parallelism) are computed here, never set by hand at a call site.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from masa.algo.config import AlgorithmConfig
from masa.config import RunConfig, engine_parallelism
from masa.engines import EngineConfig
from masa.train.config import TrainConfig
from masa.train.trainjob import TrainJobSettings, current_namespace


@dataclass(frozen=True)
class SamplingSettings:
    """Sampling settings of the step (the subset of `masa.config.RolloutConfig` the step needs)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_response_tokens: int = 512
    max_prompt_tokens: int = 1024
    solution_instruction: str = ""  # appended to each problem (masa.algo.prompts.solution_prompt)

    @classmethod
    def from_rollout_config(cls, rollout: Any, *, max_prompt_tokens: int,
                            solution_instruction: str = "") -> SamplingSettings:
        return cls(rollout.temperature, rollout.top_p, rollout.top_k, rollout.max_response_tokens,
                   max_prompt_tokens, solution_instruction)


@dataclass(frozen=True)
class EvalSettings:
    k: int = 4
    meta_k: int | None = None  # meta samples per problem; None = k
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 512
    max_problems: int | None = None
    n_solution: int = 8  # G of the meta prompt (the range of predicted pass rates)
    max_prompt_tokens: int = 1024
    seed: int = 0
    verifier_timeout_s: float = 5.0
    solution_instruction: str = ""  # appended to each problem (masa.algo.prompts.solution_prompt)
    # the response budget the meta prompt states and its predictions are parsed against: the
    # *training* budget (rollout.max_response_tokens), so the policy is asked the prompt it learnt;
    # None = max_tokens (a checkpoint benchmarked on its own, `masa benchmark`)
    meta_max_tokens: int | None = None
    # a problem is skipped (counted in n_skipped) unless its prompts leave at least this many response
    # tokens in the model's context
    min_response_tokens: int = 16

    @property
    def meta_samples(self) -> int:
        """Meta predictions sampled per problem: `meta_k`, else k."""
        return self.meta_k or self.k


def algorithm_for(cfg: RunConfig, branch: str, round_idx: int | None = None) -> AlgorithmConfig:
    """The branch's algorithm: the run's settings under the branch's name (grpo, masa, masa-efficient);
    given a round past `expert.rounds` (when set), with experts off, so the round picks and clones none."""
    algo = dataclasses.replace(cfg.algorithm, name=branch)
    if round_idx is not None and 0 < algo.expert.rounds <= round_idx:
        algo = dataclasses.replace(algo, expert=dataclasses.replace(algo.expert, enabled=False))
    return algo


def train_settings(cfg: RunConfig, branch: str, round_idx: int) -> TrainConfig:
    """The TrainConfig of `branch` in round `round_idx`.

    - bc_coef and the behaviour-cloning mode (joint or phase, masa.train.phase) from the algorithm's expert
      settings: behaviour cloning is part of MASA only (GRPO, or experts disabled, trains with bc_coef 0);
    - recompute_logprobs resolved (None: true for a real model, false for the toy);
    - a seed per round, so each round shuffles its micro-batches differently;
    - temperature 1: the engines record raw (T=1) log-probs as the "old" policy (docs/engines.md), so
      the ratio is exactly 1 before the first update whatever the sampling temperature.
    """
    algo = algorithm_for(cfg, branch, round_idx)
    bc = algo.expert.bc_coef if algo.uses_meta and algo.expert.enabled else 0.0
    recompute = cfg.train.recompute_logprobs
    if recompute is None:  # real models: the actor's own log-probs as the old ones, as the released code;
        recompute = cfg.model != "toy"  # the toy keeps the engine's (its figures were measured so)
    return dataclasses.replace(cfg.train, bc_coef=bc, recompute_logprobs=recompute, temperature=1.0,
                               seed=cfg.seed * 1000 + round_idx, bc_mode=algo.expert.mode,
                               bc_phase_batch=algo.expert.phase_batch, bc_phase_steps=algo.expert.phase_steps,
                               bc_phase_lr=algo.expert.phase_lr, bc_phase_anchor=algo.expert.phase_anchor,
                               bc_phase_moments=algo.expert.phase_moments)


def engine_config(cfg: RunConfig, step: Literal["rollout", "benchmark"], model_dir: str | Path,
                  max_model_len: int) -> EngineConfig:
    """The engine of a rollout or benchmark step: its GPUs split by `masa.config.engine_parallelism`
    (tensor parallel size and replicas; `rollout.cpu_engines` where the step finds no GPU), sampling
    dtype, memory share and checkpoint loader from `rollout.*`."""
    par = engine_parallelism(cfg, step)
    return EngineConfig(model=str(model_dir), backend=cfg.rollout.backend, dtype=cfg.rollout.dtype, seed=cfg.seed,
                        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, max_model_len=max_model_len,
                        tensor_parallel_size=par.tensor_parallel_size, replicas=par.replicas,
                        cpu_replicas=cfg.rollout.cpu_engines, load_format=cfg.rollout.load_format)


def sampling_settings(cfg: RunConfig) -> SamplingSettings:
    """The rollout step's sampling settings."""
    return SamplingSettings.from_rollout_config(cfg.rollout, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                                solution_instruction=cfg.solution_instruction)


def rollout_model_len(cfg: RunConfig) -> int:
    """The rollout engine's context: the longest prompt plus the longer of a rollout and a held-out answer
    (the same engine measures the held-out accuracy)."""
    return cfg.data.max_prompt_tokens + max(cfg.rollout.max_response_tokens, cfg.benchmark.max_tokens)


def heldout_eval_settings(cfg: RunConfig) -> EvalSettings:
    """The held-out accuracy's sampling (measured in the rollout step): the benchmark's, solutions only,
    at `data.heldout_k` samples per problem where set."""
    b = cfg.benchmark
    return EvalSettings(k=cfg.data.heldout_k or b.k, temperature=b.temperature, top_p=b.top_p, max_tokens=b.max_tokens,
                        n_solution=cfg.algorithm.n_solution, max_prompt_tokens=cfg.data.max_prompt_tokens,
                        seed=cfg.seed, solution_instruction=cfg.solution_instruction)


def benchmark_eval_settings(cfg: RunConfig) -> EvalSettings:
    """The benchmark step's settings: the held-out sampling plus the meta-awareness figures' budgets."""
    b = cfg.benchmark
    return dataclasses.replace(heldout_eval_settings(cfg), k=b.k, max_problems=b.max_problems, meta_k=b.meta_k,
                               meta_max_tokens=cfg.rollout.max_response_tokens,
                               min_response_tokens=min(cfg.algorithm.cutoff.min_tokens, b.max_tokens))


def trainjob_settings(cfg: RunConfig) -> TrainJobSettings:
    """The TrainJob's size and image for `resources.train_nodes` > 1 or `train_service`: one node per pod,
    a rank per GPU (`train_processes` CPU ranks where `train_gpus` is 0), in this pod's namespace (a
    profile namespace may forbid others)."""
    r = cfg.resources
    return TrainJobSettings(image=cfg.images.deepspeed, num_nodes=r.train_nodes,
                            proc_per_node=r.train_gpus or cfg.train_processes, namespace=current_namespace(),
                            accelerator=r.accelerator_type if r.train_gpus else "", s3_secret=r.s3_secret)
