"""Tests of masa.algo.losses: hand-derived values, masked invariance, loop-vs-vectorised, global denominators."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.losses import (
    AGGREGATIONS,
    aggregate,
    bc_loss,
    entropy_from_logits,
    k3_kl,
    loss_denominators,
    policy_loss,
    token_logprobs,
)

MODES = ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]


def _hand_batch():
    """Two sequences hitting every clip case (clip_low 0.2, clip_high 0.28, dual_clip 10).

    seq 0, A=+1, ratios 1.5, 1.1, 0.5 (+1 pad):
      r=1.5: max(-1.5, -1.28) = -1.28   clip-high hit
      r=1.1: max(-1.1, -1.1)  = -1.1
      r=0.5: max(-0.5, -0.8)  = -0.5    (positive advantage, falling ratio: not clipped)
    seq 1, A=-1, ratios 0.5, 20, 1.5, 0.9:
      r=0.5: max(0.5, 0.8) = 0.8        clip-low hit
      r=20:  max(20, 1.28) = 20 -> min(20, -A*10 = 10) = 10   dual-clip hit
      r=1.5: max(1.5, 1.28) = 1.5 -> min(1.5, 10) = 1.5
      r=0.9: max(0.9, 0.9) = 0.9
    Per-sequence sums: -2.88 and 13.2; means: -0.96 and 3.3; 7 valid tokens.
    """
    ratios = torch.tensor([[1.5, 1.1, 0.5, 1.0], [0.5, 20.0, 1.5, 0.9]], dtype=torch.float64)
    old = torch.tensor([[-1.0, -2.0, -0.5, -3.0], [-0.7, -4.0, -1.2, -2.2]], dtype=torch.float64)
    logp = old + ratios.log()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    return logp, old, adv, mask


HAND = {
    "token-mean": (-2.88 + 13.2) / 7,  # 10.32 / 7
    "seq-mean-token-mean": (-0.96 + 3.3) / 2,  # 1.17
    "seq-mean-token-sum": (-2.88 + 13.2) / 2,  # 5.16
}


@pytest.mark.parametrize("mode", MODES)
def test_policy_loss_hand_values(mode):
    logp, old, adv, mask = _hand_batch()
    loss, stats = policy_loss(logp, old, adv, mask, agg=mode)
    assert loss.item() == pytest.approx(HAND[mode], rel=1e-9)
    assert stats["pg_loss"].item() == pytest.approx(HAND[mode], rel=1e-9)
    # One token of seven hits each clip case.
    for key in ("clip_frac_low", "clip_frac_high", "dual_clip_frac"):
        assert stats[key].item() == pytest.approx(1 / 7), key
    assert "kl_ref" not in stats and "entropy" not in stats


def test_policy_loss_gradients_hand_values():
    # d loss / d logp_t = d(-A r)/d logp / 7 = -A r / 7 where the unclipped branch is active, else 0.
    # Active: seq0 r=1.1 and r=0.5 (A=+1); seq1 r=1.5 and r=0.9 (A=-1). Clipped/dual-clipped: zero gradient.
    logp, old, adv, mask = _hand_batch()
    logp.requires_grad_(True)
    policy_loss(logp, old, adv, mask)[0].backward()
    expected = torch.tensor([[0, -1.1, -0.5, 0], [0, 0, 1.5, 0.9]], dtype=torch.float64) / 7
    torch.testing.assert_close(logp.grad, expected)


def test_policy_loss_kl_term_hand_value():
    # A = 0 zeroes the surrogate, leaving kl_coef * token-mean k3. With ref - logp = ln 2 the k3 is
    # e^{ln 2} - ln 2 - 1 = 1 - ln 2; with ref = logp it is 0. Mean over 2 tokens, times 0.5: (1 - ln 2) / 4.
    logp = torch.zeros(1, 2, dtype=torch.float64)
    ref = torch.tensor([[math.log(2.0), 0.0]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, stats = policy_loss(logp, logp, torch.zeros(1, dtype=torch.float64), mask, ref_logp=ref,
                              kl_coef=0.5)
    assert loss.item() == pytest.approx((1 - math.log(2.0)) / 4)
    assert stats["kl_ref"].item() == pytest.approx((1 - math.log(2.0)) / 2)
    assert stats["approx_kl"].item() == 0.0  # logp == old_logp
    # kl_coef = 0 with a reference: statistics only, the loss is unchanged.
    loss0, stats0 = policy_loss(logp, logp, torch.zeros(1, dtype=torch.float64), mask, ref_logp=ref)
    assert loss0.item() == 0.0 and stats0["kl_ref"].item() == pytest.approx((1 - math.log(2.0)) / 2)


def test_k3_is_nonnegative_and_clamped():
    d = torch.cat([torch.linspace(-30, 30, 100, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    k = k3_kl(torch.zeros_like(d), d)
    assert (k >= 0).all() and (k <= 10).all() and k[-1] == 0
    # Near d = 0 in float32, e^d - d - 1 cancels to garbage (even negative); expm1(d) - d keeps ~d^2/2.
    small = torch.tensor([1e-3, -1e-3, 1e-4, -3e-6])
    k = k3_kl(torch.zeros(4), small)
    assert (k > 0).all()
    torch.testing.assert_close(k[:3], small[:3].double().pow(2).div(2).float(), rtol=3e-3, atol=0)


def test_approx_kl_and_entropy_stats():
    # approx_kl = mean(r - 1 - ln r): r = 2 gives 1 - ln 2, r = 1 gives 0 -> (1 - ln 2) / 2.
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.tensor([[math.log(2.0), 0.0]], dtype=torch.float64)
    ent = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    _, stats = policy_loss(logp, old, torch.ones(1, dtype=torch.float64), torch.ones(1, 2, dtype=torch.bool),
                           entropy=ent)
    assert stats["approx_kl"].item() == pytest.approx((1 - math.log(2.0)) / 2)
    assert stats["entropy"].item() == pytest.approx(2.0)


def test_stats_are_detached_tensors():
    logp, old, adv, mask = _hand_batch()
    logp.requires_grad_(True)
    _, stats = policy_loss(logp, old, adv, mask, ref_logp=old, kl_coef=0.1, entropy=logp)
    for k, v in stats.items():
        assert isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad, k


@pytest.mark.parametrize("mode", MODES)
def test_masked_positions_do_not_change_loss_stats_or_grads(mode):
    logp, old, adv, mask = _hand_batch()
    ref = old - 0.3
    ent = torch.rand_like(old)
    adv_tok = adv[:, None].expand_as(old).clone()

    def run(fill):
        lp = torch.where(mask, logp, fill).requires_grad_(True)
        loss, stats = policy_loss(lp, torch.where(mask, old, -fill), torch.where(mask, adv_tok, fill), mask,
                                  ref_logp=torch.where(mask, ref, fill), kl_coef=0.2, agg=mode,
                                  entropy=torch.where(mask, ent, fill))
        loss.backward()
        return loss.detach(), stats, lp.grad

    base = run(torch.tensor(0.0, dtype=torch.float64))
    for garbage in (1e4, float("nan"), float("inf"), -float("inf")):
        got = run(torch.tensor(garbage, dtype=torch.float64))
        torch.testing.assert_close(got[0], base[0])
        torch.testing.assert_close(got[1], base[1])
        torch.testing.assert_close(got[2], base[2])


def _reference_loop(logp, old, adv, mask, mode, clip_low=0.2, clip_high=0.28, dual=10.0):
    """Plain Python, one token at a time, straight from the formulas in the module docstring."""
    per_seq = []
    for i in range(logp.shape[0]):
        a = float(adv[i])
        toks = []
        for t in range(logp.shape[1]):
            if not mask[i, t]:
                continue
            r = math.exp(float(logp[i, t]) - float(old[i, t]))
            lt = max(-a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high))
            if a < 0:
                lt = min(lt, -a * dual)
            toks.append(lt)
        per_seq.append(toks)
    if mode == "token-mean":
        n = sum(len(s) for s in per_seq)
        return sum(sum(s) for s in per_seq) / max(n, 1)
    seqs = [s for s in per_seq if s]
    vals = [sum(s) / len(s) if mode == "seq-mean-token-mean" else sum(s) for s in seqs]
    return sum(vals) / max(len(vals), 1)


def _random_batch(seed, n=6, t=9):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g, dtype=torch.float64) * 3
    logp = old + torch.randn(n, t, generator=g, dtype=torch.float64) * 0.6
    adv = torch.randn(n, generator=g, dtype=torch.float64)
    lengths = torch.randint(0, t + 1, (n,), generator=g)
    mask = torch.arange(t)[None, :] < lengths[:, None]
    return logp, old, adv, mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_reference_loop(mode, seed):
    logp, old, adv, mask = _random_batch(seed)
    loss, _ = policy_loss(logp, old, adv, mask, agg=mode)
    assert loss.item() == pytest.approx(_reference_loop(logp, old, adv, mask, mode), rel=1e-9, abs=1e-12)


def test_aggregation_hand_values_and_empty_rows():
    # Row 0: 1 + 2 = 3 over 2 tokens; row 1: 4 over 1 token; row 2: no valid token (excluded everywhere).
    # token-mean = 7/3; seq-mean-token-mean = (1.5 + 4)/2 = 2.75; seq-mean-token-sum = (3 + 4)/2 = 3.5.
    x = torch.tensor([[1.0, 2.0, 99.0], [4.0, 99.0, 99.0], [99.0, 99.0, 99.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert aggregate(x, m, "token-mean").item() == pytest.approx(7 / 3)
    assert aggregate(x, m, "seq-mean-token-mean").item() == pytest.approx(2.75)
    assert aggregate(x, m, "seq-mean-token-sum").item() == pytest.approx(3.5)
    # An all-padding batch aggregates to 0, not NaN.
    for mode in MODES:
        assert aggregate(x, torch.zeros_like(m), mode).item() == 0.0
    assert sorted(AGGREGATIONS) == sorted(MODES)


@pytest.mark.parametrize("mode", MODES)
def test_micro_batch_shares_sum_to_full_batch(mode):
    # The trainer's contract: shares computed with the full batch's denominators sum (over micro-batches
    # and ranks) to the full-batch loss, in value and in gradient.
    logp, old, adv, mask = _random_batch(7, n=8)
    full_lp = logp.clone().requires_grad_(True)
    full, _ = policy_loss(full_lp, old, adv, mask, agg=mode, ref_logp=old, kl_coef=0.1)
    full.backward()

    splits = [(0, 1), (1, 4), (4, 5), (5, 8)]  # uneven, like ranks x micro-batches
    dens = [loss_denominators(mask[a:b]) for a, b in splits]
    g_tok = sum(d["tokens"] for d in dens)
    g_seq = sum(d["seqs"] for d in dens)
    assert g_tok == loss_denominators(mask)["tokens"] and g_seq == loss_denominators(mask)["seqs"]
    part_lp = logp.clone().requires_grad_(True)
    total = 0.0
    for a, b in splits:
        share, _ = policy_loss(part_lp[a:b], old[a:b], adv[a:b], mask[a:b], agg=mode, ref_logp=old[a:b],
                               kl_coef=0.1, global_tokens=g_tok, global_seqs=g_seq)
        share.backward()
        total = total + share.detach()
    torch.testing.assert_close(total, full.detach())
    torch.testing.assert_close(part_lp.grad, full_lp.grad)
    # Without global denominators the plain mean of micro-batch losses is NOT the full loss in general.
    local = [policy_loss(logp[a:b], old[a:b], adv[a:b], mask[a:b], agg=mode)[0] for a, b in splits]
    assert not torch.isclose(sum(local) / len(local), full.detach())


@pytest.mark.parametrize("adv_sign", [1.0, -1.0])
def test_gradient_step_moves_logp_in_advantage_direction(adv_sign):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 5, 11, generator=g).requires_grad_(True)
    tokens = torch.randint(0, 11, (1, 5), generator=g)
    mask = torch.ones(1, 5, dtype=torch.bool)
    before = token_logprobs(logits, tokens)
    loss, _ = policy_loss(before, before.detach(), torch.tensor([adv_sign]), mask)
    loss.backward()
    with torch.no_grad():
        after = token_logprobs(logits - 0.5 * logits.grad, tokens)
    assert (torch.sign(after - before.detach()) == adv_sign).all()


def test_bc_loss_hand_values():
    # NLLs: row 0 = 1, 2 (sum 3, mean 1.5); row 1 = 3. token-mean 6/3 = 2; seq-mean-token-mean
    # (1.5 + 3)/2 = 2.25; seq-mean-token-sum (3 + 3)/2 = 3. Gradient of token-mean: -1/3 on valid tokens.
    logp = torch.tensor([[-1.0, -2.0, float("nan")], [-3.0, 5.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    loss, stats = bc_loss(logp, mask)
    assert loss.item() == pytest.approx(2.0)
    assert stats["bc_nll"].item() == pytest.approx(2.0) and stats["bc_tokens"].item() == 3
    loss.backward()
    torch.testing.assert_close(logp.grad, -mask.float() / 3)
    assert bc_loss(logp, mask, agg="seq-mean-token-mean")[0].item() == pytest.approx(2.25)
    assert bc_loss(logp, mask, agg="seq-mean-token-sum")[0].item() == pytest.approx(3.0)
    assert bc_loss(logp, mask, global_tokens=6.0)[0].item() == pytest.approx(1.0)


def test_bc_loss_token_weights_hand_values():
    # Same NLLs as above (1, 2 | 3) with weights 1, 5 | 2 (padding weights are garbage and ignored):
    # token-mean = (1*1 + 5*2 + 2*3) / 3 valid tokens = 17/3; the gradient is -w/3 on valid tokens.
    # Weights of 1 give back the unweighted loss, and the stats stay unweighted.
    logp = torch.tensor([[-1.0, -2.0, float("nan")], [-3.0, 5.0, 5.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    w = torch.tensor([[1.0, 5.0, float("inf")], [2.0, float("nan"), 7.0]])
    loss, stats = bc_loss(logp, mask, weights=w)
    assert loss.item() == pytest.approx(17 / 3)
    assert stats["bc_nll"].item() == pytest.approx(2.0)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -5 / 3, 0.0], [-2 / 3, 0.0, 0.0]]))
    ones = bc_loss(logp, mask, weights=torch.ones(2, 3))[0]
    assert ones.item() == pytest.approx(bc_loss(logp, mask)[0].item())
    with pytest.raises(ValueError, match="weights"):
        bc_loss(logp, mask, weights=torch.ones(2, 2))


@pytest.mark.parametrize("chunk_rows", [1, 4, 4096])
def test_token_logprobs_and_entropy_match_log_softmax(chunk_rows):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 17, generator=g) * 4
    tokens = torch.randint(0, 17, (3, 5), generator=g)
    for temp in (1.0, 0.7):
        ref = torch.log_softmax(logits / temp, -1).gather(-1, tokens[..., None]).squeeze(-1)
        got = token_logprobs(logits, tokens, temperature=temp, chunk_rows=chunk_rows)
        torch.testing.assert_close(got, ref)
        ent = torch.distributions.Categorical(logits=logits / temp).entropy()
        torch.testing.assert_close(entropy_from_logits(logits, temperature=temp, chunk_rows=chunk_rows), ent)
    # bf16 logits are upcast: the result is float32 and close to the float32 computation.
    got16 = token_logprobs(logits.bfloat16(), tokens)
    assert got16.dtype == torch.float32
    torch.testing.assert_close(got16, token_logprobs(logits.bfloat16().float(), tokens))


def test_bad_input_errors_name_the_problem():
    logp, old, adv, mask = _hand_batch()
    with pytest.raises(KeyError, match="valid: seq-mean-token-mean, seq-mean-token-sum, token-mean"):
        policy_loss(logp, old, adv, mask, agg="token-sum")
    with pytest.raises(ValueError, match="old_logp has shape"):
        policy_loss(logp, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match="advantages has 3 rows"):
        policy_loss(logp, old, torch.zeros(3), mask)
    with pytest.raises(ValueError, match="kl_coef > 0 needs ref_logp"):
        policy_loss(logp, old, adv, mask, kl_coef=0.1)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        policy_loss(logp, old, adv, mask, dual_clip=1.0)
    with pytest.raises(ValueError, match="clip_low must be in"):
        policy_loss(logp, old, adv, mask, clip_low=1.0)
    with pytest.raises(ValueError, match="tokens"):
        token_logprobs(torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 5),
    t=st.integers(1, 7),
    seed=st.integers(0, 2**31 - 1),
    scale=st.floats(0.0, 30.0),
    mode=st.sampled_from(MODES),
)
def test_loss_finite_and_stats_bounded(n, t, seed, scale, mode):
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(n, t, generator=g) * scale
    logp = old + torch.randn(n, t, generator=g) * scale
    adv = torch.randn(n, generator=g) * (1 + scale)
    mask = torch.rand(n, t, generator=g) < 0.7
    loss, stats = policy_loss(logp, old, adv, mask, agg=mode, ref_logp=old, kl_coef=0.1)
    assert torch.isfinite(loss)
    for k in ("clip_frac_low", "clip_frac_high", "dual_clip_frac"):
        assert 0.0 <= stats[k].item() <= 1.0, k
    assert stats["approx_kl"].item() >= 0 and torch.isfinite(stats["approx_kl"])
    assert 0.0 <= stats["kl_ref"].item() <= 10.0
    # The dual clip bounds the per-token loss by |A| * c, so the token mean is bounded too.
    if mode == "token-mean":
        assert loss.item() <= adv.abs().max().item() * 10.0 + 0.1 * 10.0 + 1e-4


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 4096])
def test_token_logprobs_gradient_matches_log_softmax(chunk_rows):
    # The custom backward (softmax recomputed per block) against autograd through log_softmax, on a
    # non-contiguous view like the trainer's logits[:, :-1], with a temperature and a random upstream grad.
    g = torch.Generator().manual_seed(2)
    full = (torch.randn(3, 6, 13, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    tokens = torch.randint(0, 13, (3, 5), generator=g)
    up = torch.randn(3, 5, generator=g, dtype=torch.float64)
    ref = torch.log_softmax(full[:, :-1] / 0.8, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (ref * up).sum().backward()
    want, full.grad = full.grad.clone(), None
    got = token_logprobs(full[:, :-1], tokens, temperature=0.8, chunk_rows=chunk_rows)
    torch.testing.assert_close(got, ref.detach().float())
    (got * up.float()).sum().backward()
    torch.testing.assert_close(full.grad, want, rtol=1e-5, atol=1e-6)


def test_token_logprobs_gradcheck():
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 3))
    # Forward runs in float32 by design, so compare to finite differences with float32 tolerances.
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, tokens, chunk_rows=2).double(), (logits,),
                                    eps=1e-3, atol=1e-3, rtol=1e-3)


def test_token_logprobs_backward_leaves_float32_logits_intact():
    # At temperature 1 the float32 blocks are views of the logits; the in-place backward must not touch them.
    logits = torch.randn(2, 4, 9, requires_grad=True)
    before = logits.detach().clone()
    tokens = torch.randint(0, 9, (2, 4))
    token_logprobs(logits, tokens, chunk_rows=3).sum().backward()
    assert torch.equal(logits.detach(), before)
    want = torch.nn.functional.one_hot(tokens, 9) - torch.softmax(before, -1)
    torch.testing.assert_close(logits.grad, want)
