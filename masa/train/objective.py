"""The training objective of one micro-batch: collate samples, and combine the MASA losses.

    L = PG(solution) + PG(meta) + bc_coef * BC(experts) - entropy_coef * H

PG is `masa.algo.losses.policy_loss` (clip-higher, dual clip, optional k3 KL to a reference inside it) and
BC is `bc_loss`, the expert meta trajectories' token NLL, each token weighted as experts.parquet says
(`token_weights`: ExpertConfig.value_weight on the predicted values' digits, 1 elsewhere). Solution and meta rollouts share one policy loss
in the paper; we call it once per path with the *same* global denominators (the step's solution+meta
tokens), which sums to exactly the joint loss for every aggregation, and gives per-path statistics for
free. Experts are normalised by their own global denominators, so bc_coef means the same whatever the
share of experts in the batch.

All tensors here are aligned with `logits[:, :-1]`: position j scores token j+1 of the sequence, so a
sample with prompt length P and response length R has its response at positions P-1 .. P+R-2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from masa.algo.losses import bc_loss, entropy_from_logits, policy_loss, token_logprobs
from masa.train.data import EXPERT, PATHS, TrainSample


@dataclass
class MicroBatch:
    """Right-padded tensors of n samples, L = longest prompt+response.

    input_ids, attention_mask: [n, L]; targets, mask, old_logp, weights: [n, L-1] (see module docstring;
    weights are the experts' BC token weights, 1 elsewhere); advantages: [n], or [n, L-1] when a sample
    has per-token advantages (per-field credit); path: list of n path names. An empty micro-batch
    (padding for ranks with fewer samples) is one all-pad row with an all-false mask: it runs the
    model, and contributes zero.
    """

    input_ids: Tensor
    attention_mask: Tensor
    targets: Tensor
    mask: Tensor
    old_logp: Tensor
    advantages: Tensor
    path: list[str]
    weights: Tensor | None = None  # None: all 1

    def to(self, device) -> MicroBatch:
        t = {k: getattr(self, k).to(device) for k in
             ("input_ids", "attention_mask", "targets", "mask", "old_logp", "advantages")}
        t["weights"] = None if self.weights is None else self.weights.to(device)
        return MicroBatch(**t, path=self.path)

    def rows(self, path: str) -> Tensor:
        return torch.tensor([p == path for p in self.path], dtype=torch.bool, device=self.mask.device)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())


def collate(samples: list[TrainSample], pad_id: int) -> MicroBatch:
    """Build a MicroBatch from samples (see MicroBatch for the layout)."""
    if not samples:
        ids = torch.full((1, 2), pad_id, dtype=torch.long)
        return MicroBatch(ids, torch.ones_like(ids), ids[:, 1:].clone(), torch.zeros(1, 1, dtype=torch.bool),
                          torch.zeros(1, 1), torch.zeros(1), [EXPERT])
    L = max(s.n_tokens for s in samples)
    n = len(samples)
    ids = torch.full((n, L), pad_id, dtype=torch.long)
    att = torch.zeros(n, L, dtype=torch.long)
    mask = torch.zeros(n, L - 1, dtype=torch.bool)
    old = torch.zeros(n, L - 1)
    weights = torch.ones(n, L - 1) if any(s.weights is not None for s in samples) else None
    for i, s in enumerate(samples):
        p, r = len(s.prompt), len(s.response)
        if p < 1:
            raise ValueError("a sample needs at least one prompt token (the first response token's context)")
        ids[i, : p + r] = torch.tensor(s.prompt + s.response)
        att[i, : p + r] = 1
        mask[i, p - 1 : p + r - 1] = True
        if s.old_logp is not None:
            old[i, p - 1 : p + r - 1] = torch.tensor(s.old_logp)
        if s.weights is not None:
            weights[i, p - 1 : p + r - 1] = torch.tensor(s.weights)
    adv = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    if any(s.token_advantages is not None for s in samples):
        adv = adv[:, None].expand(n, L - 1).clone()
        for i, s in enumerate(samples):
            if s.token_advantages is not None:
                p, r = len(s.prompt), len(s.response)
                adv[i, p - 1 : p + r - 1] = torch.tensor(s.token_advantages)
    return MicroBatch(ids, att, ids[:, 1:].clone(), mask, old, adv, [s.path for s in samples], weights)


def sequence_logprobs(model, mb: MicroBatch, *, entropy: str = "none",
                      temperature: float = 1.0) -> tuple[Tensor, Tensor | None]:
    """Forward pass: per-position log-prob of the next token [n, L-1] (float32), and the entropy [n, L-1].

    entropy: "none"; "stats" (no gradient: a [rows, V] float32 softmax per chunk would otherwise be kept
    for backward, the largest activation of the step at 150k vocabularies); "grad" (entropy bonus on).
    """
    logits = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, use_cache=False).logits[:, :-1]
    logp = token_logprobs(logits, mb.targets, temperature=temperature)
    if entropy == "none":
        return logp, None
    with torch.set_grad_enabled(entropy == "grad" and torch.is_grad_enabled()):
        return logp, entropy_from_logits(logits, temperature=temperature)


@dataclass(frozen=True)
class Denominators:
    """Global (whole optimizer step, all ranks) token and sequence counts, see masa.algo.losses."""

    policy_tokens: float
    policy_seqs: float
    expert_tokens: float
    expert_seqs: float


def microbatch_loss(
    logp: Tensor,
    mb: MicroBatch,
    den: Denominators,
    *,
    clip_low: float,
    clip_high: float,
    dual_clip: float,
    agg: str,
    bc_coef: float,
    kl_coef: float = 0.0,
    entropy_coef: float = 0.0,
    ref_logp: Tensor | None = None,
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """This micro-batch's share of the step loss, and token-weighted statistic sums.

    logp, ref_logp, entropy: [n, L-1]. Returns (loss, stats) where every stat is a *sum* (a local mean
    times its token count, key suffix "_sum") or a count ("_tokens"), so the step's metrics are the
    all-reduced sums divided by all-reduced counts, independent of how samples were split.
    """
    loss = logp.new_zeros(())
    stats: dict[str, Tensor] = {}
    for path in PATHS:
        m = mb.mask & mb.rows(path)[:, None]
        pl, st = policy_loss(
            logp, mb.old_logp, mb.advantages, m, clip_low=clip_low, clip_high=clip_high,
            dual_clip=dual_clip, ref_logp=ref_logp, kl_coef=kl_coef, agg=agg, entropy=entropy,
            global_tokens=den.policy_tokens, global_seqs=den.policy_seqs)
        loss = loss + pl
        n = m.sum().to(torch.float32)
        stats[f"{path}/tokens"] = n
        stats[f"{path}/pg_loss_sum"] = st["pg_loss"]  # already a share of the global mean: sums as is
        for k in ("clip_frac_low", "clip_frac_high", "dual_clip_frac", "approx_kl", "kl_ref", "entropy"):
            if k in st:
                stats[f"{path}/{k}_sum"] = st[k] * n
        if entropy_coef > 0.0 and entropy is not None:
            loss = loss - entropy_coef * _share(entropy, m, den.policy_tokens)
    m = mb.mask & mb.rows(EXPERT)[:, None]
    if bc_coef > 0.0 or bool(m.any()):
        bl, st = bc_loss(logp, m, agg=agg, global_tokens=den.expert_tokens, global_seqs=den.expert_seqs,
                         weights=mb.weights)
        loss = loss + bc_coef * bl
        stats["expert/tokens"] = st["bc_tokens"]
        stats["expert/bc_loss_sum"] = bl.detach()
    return loss, stats


def _share(x: Tensor, mask: Tensor, global_tokens: float) -> Tensor:
    """Token-mean share of x over the global token count (used for the entropy bonus)."""
    return torch.where(mask, x, 0.0).sum() / max(global_tokens, 1.0)
