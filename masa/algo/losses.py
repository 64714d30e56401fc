"""Policy-gradient and behaviour-cloning losses of MASA, and token log-probabilities from logits.

Shapes: N sequences (solution and meta rollouts of B prompts, flattened), T response tokens, V vocab.
All inputs are right-padded token matrices with a boolean `mask[N, T]` marking real response tokens.

Policy loss (GRPO objective, arXiv 2510.03259 Eq. 1; DAPO's clip-higher; dual clip of Ye et al. 2020):

    r_t = exp(logp_t - old_logp_t)
    l_t = max(-A r_t, -A clip(r_t, 1 - clip_low, 1 + clip_high))          (clipped surrogate)
    l_t = min(l_t, -A * dual_clip)   where A < 0                          (dual clip: bounded by -A c)
    l_t += kl_coef * k3_t,  k3_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1    (optional, to a reference)
    loss = aggregate(l, mask, agg)

How this differs from vanilla GRPO (DeepSeekMath): the KL term defaults to 0 (MASA, DAPO and Dr.GRPO drop it),
the clip range is asymmetric (0.2 / 0.28), negative advantages get a dual clip, and the aggregation is
configurable, with "token-mean" over the whole batch as the default instead of GRPO's per-sequence mean.
The meta path uses the same loss as the solution path; expert meta trajectories (`bc_loss`) add a plain
token negative log-likelihood with its own weight, as in the paper's behaviour-cloning step.

How this differs from verl's `core_algos` (which MASA-RL inherits): one function instead of a mode switch,
masked positions are sanitised *before* any arithmetic (so NaN/inf garbage in padding changes neither the loss
nor the gradients), and every aggregation takes an explicit global denominator (below).

Distributed training: the global denominator contract
-----------------------------------------------------
A batch of one optimizer step is split over R ranks and M micro-batches. Each aggregation returns this
shard's *share* of the full-batch loss when given the full batch's denominators:

    full = loss_denominators(full_mask)          # or all-reduce (SUM) of loss_denominators(rank_mask)
    share = policy_loss(..., global_tokens=full["tokens"], global_seqs=full["seqs"])
    sum of `share` over all micro-batches of all ranks == policy_loss(full batch) (no global_*)

So the trainer must (1) before the first micro-batch, sum `loss_denominators` over every micro-batch of every
rank (a SUM all-reduce of the local totals); (2) pass them to every loss call; (3) make the gradient the SUM of
the shares: DDP and DeepSpeed *average* gradients over ranks (multiply each share by world_size), and
DeepSpeed's `engine.backward` also divides the loss by gradient_accumulation_steps unless called with
`scale_wrt_gas=False`. Without global_* the denominator is the shard's own, which weights short and
long micro-batches unequally (the bias DAPO and Dr.GRPO describe).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from masa.algo.registry import Registry

Aggregation = Callable[..., Tensor]
AGGREGATIONS: Registry[Aggregation] = Registry("loss aggregation")

# Bound on |logp - old_logp| before exp: a stale or mismatched old log-prob must not overflow the ratio.
_MAX_LOG_RATIO = 20.0
# Bound on the k3 KL per token, as verl's "low_var_kl": a single far-off token must not dominate the batch.
_MAX_K3 = 10.0


def _check_shapes(mask: Tensor, **mats: Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [N, T], got shape {tuple(mask.shape)}")
    for name, m in mats.items():
        if m.shape != mask.shape:
            raise ValueError(f"{name} has shape {tuple(m.shape)}, expected mask's {tuple(mask.shape)}")


def loss_denominators(mask: Tensor) -> dict[str, Tensor]:
    """Local denominators of a shard: valid tokens and sequences with at least one valid token.

    mask: [N, T] bool (or 0/1). Returns {"tokens": scalar, "seqs": scalar} float tensors, to be summed
    over every micro-batch of every rank and passed back as `global_tokens` / `global_seqs`.
    """
    m = mask.bool()
    return {"tokens": m.sum().to(torch.float32), "seqs": m.any(dim=-1).sum().to(torch.float32)}


@AGGREGATIONS.register("token-mean")
def _token_mean(loss_mat: Tensor, mask: Tensor, global_tokens, global_seqs) -> Tensor:
    """sum_{i,t} m_it l_it / sum_{i,t} m_it: every valid token weighs the same (DAPO)."""
    total = torch.where(mask, loss_mat, 0.0).sum()
    denom = mask.sum() if global_tokens is None else global_tokens
    return total / torch.clamp(torch.as_tensor(denom, dtype=total.dtype, device=total.device), min=1.0)


def _per_seq(loss_mat: Tensor, mask: Tensor, token_mean: bool) -> tuple[Tensor, Tensor]:
    """Per-sequence token sum or token mean [N], and which sequences have any valid token [N]."""
    seq_sum = torch.where(mask, loss_mat, 0.0).sum(dim=-1)
    n_tok = mask.sum(dim=-1)
    if token_mean:
        seq_sum = seq_sum / torch.clamp(n_tok, min=1).to(seq_sum.dtype)
    return seq_sum, n_tok > 0


def _seq_mean(per_seq: Tensor, has_tok: Tensor, global_seqs) -> Tensor:
    # Sequences without any valid token are neither summed nor counted (their mean would be 0/0).
    denom = has_tok.sum() if global_seqs is None else global_seqs
    total = per_seq.sum()
    return total / torch.clamp(torch.as_tensor(denom, dtype=total.dtype, device=total.device), min=1.0)


@AGGREGATIONS.register("seq-mean-token-mean")
def _seq_mean_token_mean(loss_mat: Tensor, mask: Tensor, global_tokens, global_seqs) -> Tensor:
    """mean_i (sum_t m_it l_it / sum_t m_it): every sequence weighs the same (original GRPO)."""
    return _seq_mean(*_per_seq(loss_mat, mask, token_mean=True), global_seqs)


@AGGREGATIONS.register("seq-mean-token-sum")
def _seq_mean_token_sum(loss_mat: Tensor, mask: Tensor, global_tokens, global_seqs) -> Tensor:
    """mean_i sum_t m_it l_it: longer sequences weigh more (no per-length normalisation, as Dr.GRPO)."""
    return _seq_mean(*_per_seq(loss_mat, mask, token_mean=False), global_seqs)


def aggregate(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    *,
    global_tokens: Tensor | float | None = None,
    global_seqs: Tensor | float | None = None,
) -> Tensor:
    """Reduce a per-token loss [N, T] over `mask` [N, T] to a scalar with the aggregation named `mode`.

    global_tokens / global_seqs: denominators of the full batch (see the module docstring); None uses this
    shard's own. Masked positions may hold anything, NaN included.
    """
    _check_shapes(mask, loss_mat=loss_mat)
    fn = AGGREGATIONS.get(mode)
    return fn(loss_mat, mask.bool(), global_tokens, global_seqs)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Local token mean for statistics (always the shard's own denominator)."""
    return torch.where(mask, x, 0.0).sum() / torch.clamp(mask.sum(), min=1)


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi || ref) for tokens sampled from pi: e^(ref-logp) - (ref-logp) - 1 >= 0.

    Clamped to [0, 10] (verl's "low_var_kl") so one far-off token cannot dominate. Shapes [N, T].
    """
    d = torch.clamp(ref_logp - logp, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    return torch.clamp(torch.expm1(d) - d, min=0.0, max=_MAX_K3)


def _check_clip(clip_low: float, clip_high: float, dual_clip: float, kl_coef: float) -> None:
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1 (use float('inf') to disable), got {dual_clip}")
    if kl_coef < 0.0:
        raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")


def clipped_surrogate(ratio: Tensor, adv: Tensor, *, clip_low: float, clip_high: float,
                      dual_clip: float) -> Tensor:
    """Per-token PPO surrogate with clip-higher and dual clip; ratio, adv: [N, T] -> [N, T].

    max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), then min(., -A c) where A < 0.
    """
    pg = torch.maximum(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high))
    return torch.where(adv < 0, torch.minimum(pg, -adv * dual_clip), pg)


def _ratio_stats(log_ratio: Tensor, adv: Tensor, mask: Tensor, clip_low: float, clip_high: float,
                 dual_clip: float) -> dict[str, Tensor]:
    """Clip fractions and k3 KL(old || new), local token means over mask (see `policy_loss`)."""
    r = torch.exp(log_ratio)
    # k3 of KL(old || new) from samples of old: r - 1 - ln r >= 0 (Schulman's estimator), as expm1(lr) - lr
    # because r - 1 - ln r cancels to slightly negative values near r = 1 in float32.
    return {
        "clip_frac_low": _masked_mean(((adv < 0) & (r < 1.0 - clip_low)).to(r.dtype), mask),
        "clip_frac_high": _masked_mean(((adv > 0) & (r > 1.0 + clip_high)).to(r.dtype), mask),
        "dual_clip_frac": _masked_mean(((adv < 0) & (r > dual_clip)).to(r.dtype), mask),
        "approx_kl": _masked_mean(torch.clamp(torch.expm1(log_ratio) - log_ratio, min=0.0), mask),
    }


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float = 10.0,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    agg: str = "token-mean",
    entropy: Tensor | None = None,
    global_tokens: Tensor | float | None = None,
    global_seqs: Tensor | float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped (clip-higher, dual-clip) policy-gradient loss with an optional k3 KL to a reference.

    logp, old_logp, mask: [N, T]; advantages: [N] (one per sequence, GRPO) or [N, T] (per token);
    ref_logp, entropy: [N, T] or None. Returns the scalar loss and detached statistics, all local token means
    over `mask`: clip_frac_low (A<0 and r<1-clip_low), clip_frac_high (A>0 and r>1+clip_high), dual_clip_frac
    (A<0 and r>dual_clip), approx_kl (k3 estimate of KL(old || new)), pg_loss (the surrogate alone, aggregated
    like the loss), kl_ref and entropy when given.
    """
    _check_shapes(mask, logp=logp, old_logp=old_logp)
    _check_clip(clip_low, clip_high, dual_clip, kl_coef)
    if advantages.dim() == 1:
        if advantages.shape[0] != mask.shape[0]:
            raise ValueError(f"advantages has {advantages.shape[0]} rows, mask has {mask.shape[0]}")
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    _check_shapes(mask, advantages=advantages)
    if kl_coef > 0.0 and ref_logp is None:
        raise ValueError("kl_coef > 0 needs ref_logp")
    mask = mask.bool()
    # Sanitise padding first: torch.where masks values *and* gradients, so garbage (NaN, inf) there can
    # neither leak into the loss nor turn 0 * inf into NaN in the backward pass.
    logp = torch.where(mask, logp, 0.0)
    old_logp = torch.where(mask, old_logp.detach(), 0.0)
    adv = torch.where(mask, advantages.detach(), 0.0).to(logp.dtype)

    log_ratio = torch.clamp(logp - old_logp, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)
    pg = clipped_surrogate(torch.exp(log_ratio), adv, clip_low=clip_low, clip_high=clip_high,
                           dual_clip=dual_clip)
    loss_mat = pg
    stats: dict[str, Tensor] = {}
    if ref_logp is not None:
        _check_shapes(mask, ref_logp=ref_logp)
        kl = k3_kl(logp, torch.where(mask, ref_logp.detach(), 0.0))
        if kl_coef > 0.0:
            loss_mat = pg + kl_coef * kl
        stats["kl_ref"] = _masked_mean(kl.detach(), mask)
    loss = aggregate(loss_mat, mask, agg, global_tokens=global_tokens, global_seqs=global_seqs)

    with torch.no_grad():
        stats.update(_ratio_stats(log_ratio.detach(), adv, mask, clip_low, clip_high, dual_clip))
        stats["pg_loss"] = aggregate(pg.detach(), mask, agg, global_tokens=global_tokens,
                                     global_seqs=global_seqs)
        if entropy is not None:
            _check_shapes(mask, entropy=entropy)
            stats["entropy"] = _masked_mean(entropy.detach(), mask)
    return loss, stats


def bc_loss(
    logp: Tensor,
    mask: Tensor,
    *,
    agg: str = "token-mean",
    global_tokens: Tensor | float | None = None,
    global_seqs: Tensor | float | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Behaviour cloning of expert meta trajectories: the (optionally weighted) masked token NLL.

    L_BC = aggregate(-w * logp, mask) (cross-entropy of the expert tokens under the policy). logp, mask,
    weights: [N, T]; weights None means 1 everywhere (the paper's plain BC). Weights scale tokens inside
    the same denominators, so a weight of c on a token counts it c times without changing how much the
    other tokens weigh (used to stress the tokens spelling the predicted values, which carry the
    calibration signal in ~2 of ~50 tokens). The caller weights the whole loss (ExpertConfig.bc_coef);
    same global-denominator contract as `policy_loss`, with the denominators of the *expert* batch.
    Stats: bc_nll (local unweighted token mean), bc_tokens (local valid tokens).
    """
    _check_shapes(mask, logp=logp)
    mask = mask.bool()
    nll = -torch.where(mask, logp, 0.0)
    weighted = nll
    if weights is not None:
        _check_shapes(mask, weights=weights)
        weighted = nll * torch.where(mask, weights, 0.0)
    loss = aggregate(weighted, mask, agg, global_tokens=global_tokens, global_seqs=global_seqs)
    with torch.no_grad():
        stats = {"bc_nll": _masked_mean(nll.detach(), mask), "bc_tokens": mask.sum().to(nll.dtype)}
    return loss, stats


def _blocks(n: int, t: int, chunk_rows: int):
    """(sequence slice, token slice) blocks of about `chunk_rows` positions covering an [n, t] grid."""
    if t <= chunk_rows:
        step = max(1, chunk_rows // max(t, 1))
        for a in range(0, n, step):
            yield slice(a, a + step), slice(None)
    else:
        for a in range(n):
            for b in range(0, t, chunk_rows):
                yield slice(a, a + 1), slice(b, b + chunk_rows)


class _ChunkedTokenLogProb(torch.autograd.Function):
    """log softmax(x / temp)[token] for x [N, T, V], recomputing the softmax block by block in backward.

    Works on views (e.g. `logits[:, :-1]`) without copying them whole, and saves only the input (already
    alive in the model's graph), the tokens and the log-normaliser [N, T]: no float32 [N, T, V] tensor
    outlives a block, where log_softmax keeps its whole float32 output for backward.
    d out_nt / d x_ntv = (1[v = token_nt] - softmax(x_nt / temp)_v) / temp.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, chunk_rows: int) -> Tensor:
        lse = torch.empty(tokens.shape, dtype=torch.float32, device=logits.device)
        out = torch.empty_like(lse)
        for sn, st in _blocks(*tokens.shape, chunk_rows):
            x = logits[sn, st].float()
            if temperature != 1.0:
                x = x / temperature
            lse[sn, st] = torch.logsumexp(x, dim=-1)
            out[sn, st] = x.gather(-1, tokens[sn, st, None]).squeeze(-1)
        out -= lse
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        logits, tokens, lse = ctx.saved_tensors
        temp = ctx.temperature
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        for sn, st in _blocks(*tokens.shape, ctx.chunk_rows):
            g = grad_out[sn, st, None].float()
            x = logits[sn, st].float()
            # One fresh float32 block, then in place: -softmax * g, + g at the token, / temp.
            p = (x / temp if temp != 1.0 else x).sub(lse[sn, st, None]).exp_().mul_(-g)
            p.scatter_add_(-1, tokens[sn, st, None], g)
            grad[sn, st] = p.div_(temp) if temp != 1.0 else p
        return grad, None, None, None


def token_logprobs(
    logits: Tensor, tokens: Tensor, *, temperature: float = 1.0, chunk_rows: int = 1024
) -> Tensor:
    """log softmax(logits / temperature)[tokens]: logits [N, T, V], tokens [N, T] long -> [N, T] float32.

    Memory: works on blocks of about `chunk_rows` positions at a time in float32 (bf16 logsumexp loses ~1e-2 nats on 100k
    vocabularies) and, under autograd, keeps only the input logits and a [N, T] normaliser for backward
    (`_ChunkedTokenLogProb`), instead of log_softmax's full float32 [N, T, V] output; bench/bench_logprobs.py
    measures both. `temperature` must be the sampler's, or the ratio to the engine's log-probs is biased.
    """
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"need logits [N, T, V] and tokens [N, T]; got {tuple(logits.shape)} and "
                         f"{tuple(tokens.shape)}")
    if temperature <= 0 or chunk_rows < 1:
        raise ValueError(f"need temperature > 0 and chunk_rows >= 1; got {temperature}, {chunk_rows}")
    return _ChunkedTokenLogProb.apply(logits, tokens.long(), float(temperature), int(chunk_rows))


def entropy_from_logits(logits: Tensor, *, temperature: float = 1.0, chunk_rows: int = 1024) -> Tensor:
    """Entropy of softmax(logits / temperature) per position: [N, T, V] -> [N, T] float32.

    H = logsumexp(x) - sum softmax(x) x, in blocks like `token_logprobs` (differentiable, but under autograd
    every block's float32 softmax is kept). For statistics; callers
    that do not need its gradient should call it under torch.no_grad().
    """
    if logits.dim() != 3:
        raise ValueError(f"need logits [N, T, V], got {tuple(logits.shape)}")
    out = torch.empty(logits.shape[:2], dtype=torch.float32, device=logits.device)
    for sn, st in _blocks(*logits.shape[:2], chunk_rows):
        x = logits[sn, st].float() / temperature
        p = torch.softmax(x, dim=-1)
        out[sn, st] = torch.logsumexp(x, dim=-1) - (p * x).sum(dim=-1)
    return out
