"""Samples of one training round: loading the shards, planning steps, sharding over ranks, packing.

Every rank loads the whole (small) shard and computes the same plan, so ranks agree on the global loss
denominators and on how many micro-batches each optimizer step has without any collective. Each rank
then trains on a disjoint share of each step's samples.

How we differ from verl (which the paper's code uses): verl balances sequence lengths over data-parallel
ranks and packs micro-batches by a token budget ("dynamic batch size") too, but rebuilds the batch
through a single-controller; here the plan is a pure function of (shard, config, world size).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from masa.schemas import (
    CLONING_NEEDS,
    CLONING_OPTIONAL,
    PATHS,
    TRAINING_NEEDS,
    TRAINING_OPTIONAL,
    require_columns,
)

EXPERT = "expert"


@dataclass(frozen=True)
class TrainSample:
    """One sequence to train on: prompt and response token ids (lists of ints).

    `old_logp` holds the sampling policy's log-probability of each response token (None for experts,
    which are cloned, not importance-weighted). `path` is "solution", "meta" or "expert". `weights`
    (experts only, None = all 1) are the per-token behaviour-cloning weights of `masa.algo.losses.bc_loss`.
    `token_advantages` (meta rows under per-field credit, None = `advantage` for every token) give
    each response token its own advantage.
    """

    prompt: tuple[int, ...]
    response: tuple[int, ...]
    old_logp: tuple[float, ...] | None
    advantage: float
    path: str
    weights: tuple[float, ...] | None = None
    token_advantages: tuple[float, ...] | None = None

    @property
    def n_tokens(self) -> int:
        return len(self.prompt) + len(self.response)

    @property
    def inert(self) -> bool:
        """A policy sample whose every response token has advantage 0 (a zero-variance group's rollout).

        Its clipped policy-gradient term, -A * min(ratio, clip(ratio)), is 0 at any ratio, so without a
        KL or entropy term it adds exactly nothing to the step's loss or gradient; it still counts in
        the step's denominators.
        """
        if self.path == EXPERT:
            return False
        if self.token_advantages is not None:  # these, not `advantage`, weight the response tokens
            return not any(self.token_advantages)
        return self.advantage == 0.0


@dataclass(frozen=True)
class StepPlan:
    """One optimizer step: micro-batches per rank (lists of sample indices) and the global denominators.

    `micro[r]` is rank r's list of micro-batches; every rank has the same number of micro-batches (short
    ranks get empty ones) because ZeRO-2/3 reduce gradients in every backward, a collective all ranks
    must join. `policy_tokens`/`policy_seqs` count solution+meta response tokens/sequences of the whole
    step over all ranks; `expert_tokens`/`expert_seqs` the same for the behaviour-cloned samples.
    `skipped` counts the step's inert samples left out of `micro` (still in the denominators).
    """

    micro: tuple[tuple[tuple[int, ...], ...], ...]
    policy_tokens: int
    policy_seqs: int
    expert_tokens: int
    expert_seqs: int
    skipped: int = 0


def load_policy_samples(path: str | Path) -> list[TrainSample]:
    """Solution and meta rows of a scored shard (docs/rollout-shard.md). Empty responses are skipped."""
    path = Path(path)
    table = pq.read_table(path)
    require_columns(table.column_names, TRAINING_NEEDS, str(path))
    # token_advantages is optional: shards scored before it existed, or with sequence credit, lack it
    rows = table.select([*TRAINING_NEEDS, *(c for c in TRAINING_OPTIONAL if c in table.column_names)]).to_pylist()
    out = []
    for i, r in enumerate(rows):
        if r["path"] not in PATHS:
            raise ValueError(f"{path}: row {i}: path must be one of {PATHS}, got {r['path']!r}")
        resp = r["response_token_ids"] or []
        if not resp:
            continue
        lp = r["logprobs"]
        if lp is None or len(lp) != len(resp):
            raise ValueError(f"{path}: row {i}: logprobs has {0 if lp is None else len(lp)} entries "
                             f"for {len(resp)} response tokens")
        ta = r.get("token_advantages")
        if ta is not None and len(ta) != len(resp):
            raise ValueError(f"{path}: row {i}: token_advantages has {len(ta)} entries for {len(resp)} response tokens")
        out.append(TrainSample(tuple(r["prompt_token_ids"]), tuple(resp), tuple(lp), float(r["advantage"]),
                          r["path"], token_advantages=None if ta is None else tuple(ta)))
    return out


def load_expert_samples(path: str | Path | None) -> list[TrainSample]:
    """Expert meta trajectories (experts.parquet), cloned with the behaviour-cloning loss."""
    if path is None:
        return []
    path = Path(path)
    table = pq.read_table(path)
    require_columns(table.column_names, CLONING_NEEDS, str(path))
    # token_weights is optional: shards scored before it existed clone every token with weight 1
    cols = [*CLONING_NEEDS, *(c for c in CLONING_OPTIONAL if c in table.column_names)]
    out = []
    for i, r in enumerate(table.select(cols).to_pylist()):
        resp, w = r["response_token_ids"], r.get("token_weights")
        if not resp:
            continue
        if w is not None and len(w) != len(resp):
            raise ValueError(f"{path}: row {i}: token_weights has {len(w)} entries for {len(resp)} response tokens")
        out.append(TrainSample(tuple(r["prompt_token_ids"]), tuple(resp), None, 0.0, EXPERT,
                          None if w is None else tuple(w)))
    return out


def _chunks(items: list[int], n: int) -> list[list[int]]:
    """Split `items` into n contiguous chunks whose sizes differ by at most one."""
    q, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


def round_steps(n_policy: int, *, steps: int, samples_per_step: int | None) -> int:
    """Optimizer steps of a round: `steps` as configured, or, with `samples_per_step`, as many as the
    round's policy samples fill (ceil(n_policy / samples_per_step), at least 1).

    Derived from the samples the round actually has, so a round that gating made smaller takes fewer
    steps instead of revisiting samples (verl: ppo_mini_batch_size prompts x n per step, ppo_epochs 1).
    """
    if samples_per_step is None:
        return steps
    return max(1, -(-n_policy // samples_per_step))


def split_steps(n_policy: int, n_expert: int, *, steps: int, samples_per_step: int | None,
                seed: int, epochs: int = 1) -> list[list[int]]:
    """Indices (policy 0..n_policy-1, then experts) of each optimizer step, shuffled with `seed`.

    With `samples_per_step` None the round's samples are passed over `epochs` times (each pass freshly
    shuffled, as PPO epochs / verl's ppo_epochs) and the concatenated passes are split evenly over
    `steps`; experts likewise. Otherwise `steps` is ignored: the round takes `round_steps` steps and
    every policy sample and expert is used exactly once, split evenly (sizes differ by at most one, so
    no step is a small remainder). Samples are never cycled.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if samples_per_step is not None and epochs != 1:
        raise ValueError("give either samples_per_step or epochs > 1, not both")
    rng = random.Random(seed)

    def passes(items: list[int], n: int) -> list[int]:
        out: list[int] = []
        for _ in range(n):
            order = list(items)
            rng.shuffle(order)
            out += order
        return out

    # first pass of each, then the extra ones: one epoch draws exactly as before `epochs` existed
    pol = passes(list(range(n_policy)), 1)
    exp = passes(list(range(n_policy, n_policy + n_expert)), 1)
    pol = pol + passes(list(range(n_policy)), epochs - 1)
    exp = exp + passes(list(range(n_policy, n_policy + n_expert)), epochs - 1)
    n_steps = round_steps(n_policy, steps=steps, samples_per_step=samples_per_step)
    return [p + e for p, e in zip(_chunks(pol, n_steps), _chunks(exp, n_steps), strict=True)]


def shard_balanced(indices: list[int], lengths: list[int], world: int) -> list[list[int]]:
    """Disjoint per-rank shares with balanced token counts (longest first onto the lightest rank)."""
    loads = [0] * world
    shares: list[list[int]] = [[] for _ in range(world)]
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        shares[r].append(i)
        loads[r] += lengths[i]
    return shares


def pack_microbatches(indices: list[int], lengths: list[int], budget: int) -> list[tuple[int, ...]]:
    """Pack samples into micro-batches whose padded size (count x longest) stays within `budget` tokens.

    Samples are taken longest first so padding stays small; a sample longer than the budget goes alone.
    """
    out: list[tuple[int, ...]] = []
    cur: list[int] = []
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) + 1) * longest > budget:
            out.append(tuple(cur))
            cur = []
        cur.append(i)
    if cur:
        out.append(tuple(cur))
    return out


def plan_round(samples: list[TrainSample], *, world: int, steps: int, samples_per_step: int | None,
               token_budget: int, seed: int, epochs: int = 1, skip_inert: bool = False) -> list[StepPlan]:
    """The full, deterministic plan of a round (every rank computes the same one).

    `samples` lists policy samples first, then experts. With `skip_inert` (only valid when the loss has
    no KL and no entropy term) inert samples are not put in any micro-batch: the same steps, the same
    denominators, the same gradient, without their forward and backward passes.
    """
    if not samples:
        raise ValueError("no samples to train on: the scored shard has no non-empty responses and there "
                         "are no experts")
    n_policy = sum(s.path != EXPERT for s in samples)
    if any(s.path == EXPERT for s in samples[:n_policy]):
        raise ValueError("plan_round: policy samples must come before expert samples")
    lengths = [s.n_tokens for s in samples]
    plans = []
    for idx in split_steps(n_policy, len(samples) - n_policy, steps=steps,
                           samples_per_step=samples_per_step, seed=seed, epochs=epochs):
        computed = [i for i in idx if not (skip_inert and samples[i].inert)]
        shares = shard_balanced(computed, lengths, world)
        micro = [pack_microbatches(sh, lengths, token_budget) for sh in shares]
        n_micro = max(1, max(len(m) for m in micro))
        micro = [tuple(m) + ((),) * (n_micro - len(m)) for m in micro]
        pol = [samples[i] for i in idx if samples[i].path != EXPERT]
        exp = [samples[i] for i in idx if samples[i].path == EXPERT]
        plans.append(StepPlan(tuple(micro), sum(len(s.response) for s in pol), len(pol),
                              sum(len(s.response) for s in exp), len(exp), len(idx) - len(computed)))
    return plans
