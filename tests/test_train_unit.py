"""Fast tests of the training step's pure parts: config, round plan, collate, objective, metrics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.configbase import ConfigError, from_dict
from masa.train.config import TrainConfig
from masa.train.data import EXPERT, TrainSample, pack_microbatches, plan_round, shard_balanced, split_steps
from masa.train.metrics import KEYS, StepAccumulator
from masa.train.objective import Denominators, collate, microbatch_loss

# ---------------------------------------------------------------- config


def test_config_defaults_follow_the_paper():
    c = TrainConfig()
    assert (c.lr, c.warmup_steps, c.weight_decay, c.grad_clip) == (1e-6, 20, 0.1, 1.0)
    assert (c.kl_coef, c.entropy_coef, c.clip_low, c.clip_high) == (0.0, 0.0, 0.2, 0.28)
    assert c.recompute_logprobs is None  # resolved per model by masa.runner.settings.train_settings


def test_old_logprobs_are_recomputed_for_real_models_by_default():
    # issue 14 item 3: the released code recomputes old log-probs with the actor before the update
    from masa.config import load_config
    from masa.runner.settings import train_settings

    def train_config_for(cfg):
        return train_settings(cfg, cfg.algorithm.name, 0)

    assert train_config_for(load_config("paper")).recompute_logprobs is True
    assert train_config_for(load_config("paper-1.7b")).recompute_logprobs is True
    assert train_config_for(load_config("toy")).recompute_logprobs is False  # the engine's, as measured
    assert train_config_for(load_config("paper", ["train.recompute_logprobs=false"])).recompute_logprobs is False
    assert train_config_for(load_config("toy", ["train.recompute_logprobs=true"])).recompute_logprobs is True


def test_config_reports_every_bad_key():
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"lr": -1, "zero_stage": 1, "steps_per_round": 0, "nope": 1})
    msg = str(e.value)
    assert "nope: unknown key" in msg and "zero_stage" in msg
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, {"lr": -1.0, "steps_per_round": 0})
    assert "lr: must be > 0" in str(e.value) and "steps_per_round: must be >= 1" in str(e.value)
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(TrainConfig, {"samples_per_step": 64, "epochs": 2})


# ---------------------------------------------------------------- plan


def _samples(lengths, n_expert=0):
    out = [TrainSample((1,) * 2, (5,) * (n - 2), (-1.0,) * (n - 2), 1.0, "solution") for n in lengths]
    return out + [TrainSample((1, 1), (7, 7, 7), None, 0.0, EXPERT) for _ in range(n_expert)]


def test_split_steps_uses_every_sample_once_and_is_seeded():
    steps = split_steps(10, 3, steps=3, samples_per_step=None, seed=1)
    flat = sorted(i for s in steps for i in s)
    assert flat == list(range(13))
    assert [len(s) for s in steps] == [4 + 1, 3 + 1, 3 + 1]
    assert steps == split_steps(10, 3, steps=3, samples_per_step=None, seed=1)
    assert steps != split_steps(10, 3, steps=3, samples_per_step=None, seed=2)


def test_split_steps_with_samples_per_step_never_cycles():
    # 5 policy samples at 4 per step: ceil(5/4) = 2 steps of 3 and 2 (even split), each sample once;
    # the configured `steps` (3) does not apply
    steps = split_steps(5, 0, steps=3, samples_per_step=4, seed=0)
    assert [len(s) for s in steps] == [3, 2]
    assert sorted(i for s in steps for i in s) == list(range(5))
    # a round of experts only still takes one step
    assert [sorted(s) for s in split_steps(0, 2, steps=3, samples_per_step=4, seed=0)] == [[0, 1]]


@pytest.mark.parametrize(("branch", "n_policy", "n_expert", "expected"), [
    # the paper preset's round: 128 prompts, G = Gm = 16, samples_per_step 2048 (verl's mini-batch of
    # 128 prompts x n 16, ppo_epochs 1)
    ("grpo", 128 * 16, 0, [2048]),  # 2048 solution samples: 1 step
    ("masa", 128 * 16 + 128 * 16, 40, [2048 + 20, 2048 + 20]),  # + 2048 meta: 2 steps, experts split
    # gating skipped the solutions of 48 prompts: 80 x 16 + 128 x 16 = 3328 -> 2 steps of 1664
    ("masa-efficient", 80 * 16 + 128 * 16, 0, [1664, 1664]),
])
def test_paper_round_uses_every_sample_once_per_branch(branch, n_policy, n_expert, expected):
    steps = split_steps(n_policy, n_expert, steps=4, samples_per_step=2048, seed=0)
    assert [len(s) for s in steps] == expected
    flat = [i for s in steps for i in s]
    assert sorted(flat) == list(range(n_policy + n_expert))  # every sample exactly once


def test_split_steps_epochs_pass_over_every_sample_each_time():
    # 10 policy samples + 2 experts, 2 epochs over 4 steps: 20 policy and 4 expert slots, each sample
    # exactly twice, 5 policy + 1 expert per step; the first pass is the 1-epoch order (same seed).
    steps = split_steps(10, 2, steps=4, samples_per_step=None, seed=3, epochs=2)
    flat = [i for s in steps for i in s]
    assert sorted(flat) == sorted(list(range(12)) * 2)
    assert [len(s) for s in steps] == [6, 6, 6, 6]
    one = split_steps(10, 2, steps=2, samples_per_step=None, seed=3)
    assert [i for s in steps[:2] for i in s if i < 10] == [i for s in one for i in s if i < 10]
    with pytest.raises(ValueError, match="not both"):
        split_steps(10, 2, steps=4, samples_per_step=4, seed=3, epochs=2)


def test_pack_respects_budget_and_keeps_oversized_alone():
    lengths = [10, 3, 3, 3, 40, 8]
    mbs = pack_microbatches(list(range(6)), lengths, budget=20)
    assert sorted(i for m in mbs for i in m) == list(range(6))
    for m in mbs:
        assert len(m) == 1 or len(m) * max(lengths[i] for i in m) <= 20
    assert (4,) in mbs  # 40 tokens > budget: alone


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(3, 50), min_size=1, max_size=40), st.integers(1, 4), st.integers(16, 200))
def test_plan_is_a_disjoint_cover_with_equal_microbatch_counts(lengths, world, budget):
    samples = _samples(lengths, n_expert=2)
    plans = plan_round(samples, world=world, steps=2, samples_per_step=None, token_budget=budget, seed=0)
    seen = []
    for p in plans:
        assert len({len(m) for m in p.micro}) == 1  # every rank joins the same number of backwards
        seen += [i for rank in p.micro for mb in rank for i in mb]
    assert sorted(seen) == list(range(len(samples)))
    assert sum(p.policy_seqs for p in plans) == len(lengths)
    assert sum(p.policy_tokens for p in plans) == sum(n - 2 for n in lengths)
    assert sum(p.expert_tokens for p in plans) == 6


def test_inert_samples_are_left_out_of_the_microbatches_but_not_the_denominators():
    # 4 solution samples of 5 tokens (3 response tokens each): #1 has advantage 0 (inert), #3 has
    # advantage 0 but a non-zero per-token advantage (per-field credit: not inert), plus one expert
    # (never inert, whatever its advantage field says).
    s = [TrainSample((1, 1), (5,) * 3, (-1.0,) * 3, a, "solution", token_advantages=ta)
         for a, ta in ((1.0, None), (0.0, None), (-1.0, None), (0.0, (0.0, 0.5, 0.0)))]
    s.append(TrainSample((1, 1), (7, 7, 7), None, 0.0, EXPERT))
    assert [x.inert for x in s] == [False, True, False, False, False]
    assert TrainSample((1,), (5,), (-1.0,), 0.0, "meta", token_advantages=(0.0,)).inert
    kw = dict(world=2, steps=1, samples_per_step=None, token_budget=64, seed=0)
    full, skip = plan_round(s, **kw)[0], plan_round(s, skip_inert=True, **kw)[0]
    computed = sorted(i for rank in skip.micro for mb in rank for i in mb)
    assert computed == [0, 2, 3, 4] and skip.skipped == 1 and full.skipped == 0
    # the loss is normalised by the same whole-step counts: 4 policy sequences, 4 x 3 response tokens
    assert (skip.policy_seqs, skip.policy_tokens, skip.expert_seqs, skip.expert_tokens) == (4, 12, 1, 3)
    assert (full.policy_seqs, full.policy_tokens, full.expert_seqs, full.expert_tokens) == (4, 12, 1, 3)


def test_an_inert_sample_adds_nothing_to_the_loss_or_its_gradient():
    # _hand_batch's A, B, C plus D: a solution sample with advantage 0 and ratio 2 (clipped high if A > 0,
    # but A = 0): its PG term per token is max(-0 * 2, -0 * 1.28) = 0, so its gradient is 0 too. The
    # batch with D and the batch without it, over the same denominators, give the same loss (0.4 of
    # test_loss_of_hand_built_batch) and the same gradient on A, B and C.
    mb, logp = _hand_batch()
    d = TrainSample((1,), (5, 6), (-1.0, -2.0), 0.0, "solution")
    with_d = collate([*[TrainSample((1,), (5, 6), (-1.0, -2.0), 1.0, "solution"),
                        TrainSample((1,), (7,), (-1.0,), -2.0, "meta"),
                        TrainSample((1,), (8, 9), None, 0.0, EXPERT)], d], pad_id=0)
    logp_d = torch.cat([logp, torch.tensor([[-1.0 + math.log(2.0), -2.0 + math.log(2.0)]])])
    den = Denominators(policy_tokens=4, policy_seqs=3, expert_tokens=4, expert_seqs=2)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=10.0, agg="token-mean", bc_coef=0.5)
    a, b = logp.clone().requires_grad_(True), logp_d.clone().requires_grad_(True)
    la, _ = microbatch_loss(a, mb, den, **kw)
    lb, _ = microbatch_loss(b, with_d, den, **kw)
    (la + lb).backward()
    assert la.item() == pytest.approx(0.4, abs=1e-6) and lb.item() == la.item()
    assert torch.equal(b.grad[:3], a.grad) and b.grad[3].abs().sum().item() == 0.0


def test_inert_samples_are_computed_where_kl_or_entropy_gives_them_a_gradient():
    assert TrainConfig().skips_inert
    assert not TrainConfig(kl_coef=0.01).skips_inert
    assert not TrainConfig(entropy_coef=0.01).skips_inert
    assert not TrainConfig(skip_inert=False).skips_inert


def test_plan_refuses_an_empty_round():
    with pytest.raises(ValueError, match="no samples to train on"):
        plan_round([], world=2, steps=1, samples_per_step=None, token_budget=64, seed=0)


def test_shard_balanced_balances_tokens():
    # longest first onto the lightest rank: 10->r0, 9->r1, 8->r1, 2, 1, 1 -> r0: loads 14 and 17
    lengths = [10, 9, 8, 2, 1, 1]
    shares = shard_balanced(list(range(6)), lengths, 2)
    assert shares == [[0, 3, 4, 5], [1, 2]]
    assert shard_balanced([0, 1, 2, 3], [5, 5, 5, 5], 2) == [[0, 2], [1, 3]]


# ---------------------------------------------------------------- collate + objective


def test_collate_aligns_response_with_next_token_positions():
    s = TrainSample((11, 12, 13), (21, 22), (-0.5, -1.5), 2.0, "meta")
    mb = collate([s, TrainSample((11,), (31,), (-0.25,), -1.0, "solution")], pad_id=0)
    assert mb.input_ids.tolist() == [[11, 12, 13, 21, 22], [11, 31, 0, 0, 0]]
    # logits position j predicts token j+1: responses sit at positions P-1 .. P+R-2
    assert mb.mask.tolist() == [[False, False, True, True], [True, False, False, False]]
    assert mb.targets[0, 2:].tolist() == [21, 22] and mb.targets[1, 0].item() == 31
    assert mb.old_logp[0, 2:].tolist() == [-0.5, -1.5] and mb.old_logp[1, 0].item() == -0.25
    assert mb.path == ["meta", "solution"]


def test_collate_places_expert_token_weights_on_response_positions():
    # an expert with weights (1, 5) beside a policy sample: weights sit where the mask is, 1 elsewhere;
    # without any weighted sample the batch carries none (bc_loss then weighs every token 1)
    e = TrainSample((11, 12), (21, 22), None, 0.0, "expert", (1.0, 5.0))
    mb = collate([e, TrainSample((11,), (31,), (-0.25,), -1.0, "solution")], pad_id=0)
    assert mb.weights.tolist() == [[1.0, 1.0, 5.0], [1.0, 1.0, 1.0]]
    assert collate([TrainSample((11,), (31,), (-0.25,), -1.0, "solution")], pad_id=0).weights is None


def test_collate_places_per_token_advantages_on_response_positions():
    # a meta sample with per-field credit (per-token advantages 0.5, -2) beside one with a scalar 1.0:
    # the batch carries [n, L-1] advantages, the scalar broadcast, the per-token ones where the mask is
    m = TrainSample((11, 12), (21, 22), (-1.0, -1.0), 3.0, "meta", token_advantages=(0.5, -2.0))
    mb = collate([m, TrainSample((11,), (31,), (-0.25,), 1.0, "solution")], pad_id=0)
    assert mb.advantages.tolist() == [[3.0, 0.5, -2.0], [1.0, 1.0, 1.0]]
    assert mb.mask.tolist() == [[False, True, True], [True, False, False]]
    assert collate([TrainSample((11,), (31,), (-0.25,), 1.0, "solution")], pad_id=0).advantages.shape == (1,)


def test_sequence_logprobs_score_next_tokens_at_the_sampler_temperature():
    from types import SimpleNamespace

    from masa.train.objective import sequence_logprobs

    torch.manual_seed(0)
    mb = collate([TrainSample((3, 4), (5, 6), (-1.0, -1.0), 1.0, "solution")], pad_id=0)
    logits = torch.randn(1, 4, 8)

    def model(input_ids, attention_mask, use_cache):
        return SimpleNamespace(logits=logits)

    logp, ent = sequence_logprobs(model, mb, entropy="stats", temperature=2.0)
    ref = torch.log_softmax(logits[:, :-1] / 2.0, -1)
    # position 1 (prompt's last token) scores response token 5, position 2 scores token 6
    assert logp[0, 1].item() == pytest.approx(ref[0, 1, 5].item(), abs=1e-6)
    assert logp[0, 2].item() == pytest.approx(ref[0, 2, 6].item(), abs=1e-6)
    assert ent[0, 1].item() == pytest.approx(-(ref[0, 1].exp() * ref[0, 1]).sum().item(), abs=1e-5)
    assert not ent.requires_grad


def test_empty_microbatch_contributes_nothing():
    mb = collate([], pad_id=0)
    logp = torch.zeros(mb.mask.shape, requires_grad=True)
    loss, _ = microbatch_loss(logp, mb, Denominators(5, 2, 3, 1), clip_low=0.2, clip_high=0.28,
                              dual_clip=10.0, agg="token-mean", bc_coef=0.5)
    loss.backward()
    assert loss.item() == 0.0 and logp.grad.abs().sum().item() == 0.0


def _hand_batch():
    # A: solution, 2 response tokens, advantage +1, on-policy (ratio 1)
    # B: meta, 1 response token, advantage -2, new logp = old + log 0.5 (ratio 0.5 < 1 - 0.2: clipped low)
    # C: expert, 2 tokens with logp -1 and -3
    a = TrainSample((1,), (5, 6), (-1.0, -2.0), 1.0, "solution")
    b = TrainSample((1,), (7,), (-1.0,), -2.0, "meta")
    c = TrainSample((1,), (8, 9), None, 0.0, EXPERT)
    mb = collate([a, b, c], pad_id=0)
    logp = torch.zeros(mb.mask.shape)
    logp[0, :2] = torch.tensor([-1.0, -2.0])
    logp[1, 0] = -1.0 + math.log(0.5)
    logp[2, :2] = torch.tensor([-1.0, -3.0])
    return mb, logp


def test_loss_of_hand_built_batch():
    mb, logp = _hand_batch()
    logp.requires_grad_(True)
    # Whole-step denominators: this micro-batch plus, elsewhere (another rank), 1 more policy token and
    # 2 more expert tokens: policy tokens 3 + 1 = 4, expert tokens 2 + 2 = 4.
    den = Denominators(policy_tokens=4, policy_seqs=3, expert_tokens=4, expert_seqs=2)
    loss, stats = microbatch_loss(logp, mb, den, clip_low=0.2, clip_high=0.28, dual_clip=10.0,
                                  agg="token-mean", bc_coef=0.5)
    # PG per token: A (r=1, A=+1): -1 each, 2 tokens -> -2.
    # B (r=0.5, A=-2): max(-A r, -A clip(r, 0.8, 1.28)) = max(1.0, 1.6) = 1.6; dual clip min(1.6, 20) = 1.6.
    # policy share = (-2 + 1.6) / 4 = -0.1.
    # BC share = (1 + 3) / 4 = 1.0, weighted 0.5 -> 0.5.   Total = 0.4.
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    assert stats["solution/pg_loss_sum"].item() == pytest.approx(-0.5, abs=1e-6)
    assert stats["meta/pg_loss_sum"].item() == pytest.approx(0.4, abs=1e-6)
    assert stats["meta/clip_frac_low_sum"].item() == pytest.approx(1.0)  # 1 token clipped x 1 token
    assert stats["expert/bc_loss_sum"].item() == pytest.approx(1.0, abs=1e-6)
    loss.backward()
    # d/dlogp of A's tokens: -A r / 4 = -0.25 (raising them lowers the loss); B is clipped: no gradient;
    # expert tokens: -0.5 / 4 = -0.125.
    assert logp.grad[0, :2].tolist() == pytest.approx([-0.25, -0.25])
    assert logp.grad[1, 0].item() == 0.0
    assert logp.grad[2, :2].tolist() == pytest.approx([-0.125, -0.125])


def test_kl_and_entropy_terms_add_their_global_shares():
    mb, logp = _hand_batch()
    den = Denominators(4, 3, 4, 2)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=10.0, agg="token-mean", bc_coef=0.5)
    base, _ = microbatch_loss(logp, mb, den, **kw)
    # ref = logp + log 2 on every token: k3 = e^d - d - 1 with d = log 2: 2 - log 2 - 1 = 1 - log 2,
    # on the 3 policy tokens, over 4 global policy tokens, times kl_coef 0.1
    ref = logp + math.log(2.0)
    with_kl, st = microbatch_loss(logp, mb, den, kl_coef=0.1, ref_logp=ref, **kw)
    assert (with_kl - base).item() == pytest.approx(0.1 * 3 * (1 - math.log(2.0)) / 4, abs=1e-6)
    assert st["solution/kl_ref_sum"].item() == pytest.approx(2 * (1 - math.log(2.0)), abs=1e-6)
    # entropy 0.5 on every position: bonus -0.2 * (3 policy tokens x 0.5) / 4 (experts get none)
    ent = torch.full_like(logp, 0.5)
    with_ent, _ = microbatch_loss(logp, mb, den, entropy_coef=0.2, entropy=ent, **kw)
    assert (with_ent - base).item() == pytest.approx(-0.2 * 1.5 / 4, abs=1e-6)


def test_loss_ignores_masked_positions():
    mb, logp = _hand_batch()
    den = Denominators(4, 3, 4, 2)
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=10.0, agg="token-mean", bc_coef=0.5)
    ref, _ = microbatch_loss(logp, mb, den, **kw)
    junk = torch.where(mb.mask, logp, torch.full_like(logp, float("nan")))
    mb.old_logp = torch.where(mb.mask, mb.old_logp, torch.full_like(logp, 1e9))
    got, _ = microbatch_loss(junk, mb, den, **kw)
    assert got.item() == ref.item()


def test_split_over_microbatches_sums_to_full_batch_loss():
    mb, logp = _hand_batch()
    den = Denominators(3, 2, 2, 1)  # the denominators of exactly this batch
    kw = dict(clip_low=0.2, clip_high=0.28, dual_clip=10.0, agg="token-mean", bc_coef=0.5)
    full, _ = microbatch_loss(logp, mb, den, **kw)
    parts = 0.0
    for i in range(3):
        sub = collate([[TrainSample((1,), (5, 6), (-1.0, -2.0), 1.0, "solution"),
                        TrainSample((1,), (7,), (-1.0,), -2.0, "meta"),
                        TrainSample((1,), (8, 9), None, 0.0, EXPERT)][i]], pad_id=0)
        sl = logp[i : i + 1, : sub.mask.shape[1]]
        parts += microbatch_loss(sl, sub, den, **kw)[0].item()
    assert parts == pytest.approx(full.item(), abs=1e-6)


# ---------------------------------------------------------------- metrics


def test_accumulator_weights_means_by_tokens():
    acc = StepAccumulator()
    acc.add({"solution/tokens": torch.tensor(1.0), "solution/entropy_sum": torch.tensor(1.0)},
            loss=torch.tensor(0.5), tokens=4)
    acc.add({"solution/tokens": torch.tensor(3.0), "solution/entropy_sum": torch.tensor(3.0 * 2.0)},
            loss=torch.tensor(0.25), tokens=6)
    acc.grad_norm, acc.lr = torch.tensor(2.0), 1e-6
    row = acc.reduce(step=1, step_in_round=1, seconds=2.0, gap=None, device="cpu")
    assert row["solution/entropy"] == pytest.approx((1 + 6) / 4)  # not the mean of means (1.5)
    assert row["loss"] == pytest.approx(0.75) and row["tokens_per_s"] == pytest.approx(5.0)
    assert row["meta/entropy"] is None and row["logprob_gap"] is None
    with pytest.raises(KeyError, match="unexpected statistic"):
        acc.add({"bogus": torch.tensor(1.0)}, loss=torch.tensor(0.0), tokens=0)
    assert "expert/bc_loss_sum" in KEYS


# ---------------------------------------------------------------- GPU MFU bench, CPU smoke run


def _mfu_bench():
    """bench/gpu_train_mfu.py as a module (bench/ is no package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "gpu_train_mfu.py"
    spec = importlib.util.spec_from_file_location("gpu_train_mfu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gpu_mfu_bench_runs_tiny_on_cpu():
    mod = _mfu_bench()
    out = mod.run(mod.parse(["--tiny", "--cpu", "--warmup", "1", "--max-steps", "2", "--time-box", "60"]))
    assert out["steps_measured"] == 2 and out["tokens_per_s"] > 0 and out["mfu"] is None
    # 6 x (non-embedding + LM head) + 12 x layers x heads x head_dim x seq, for the tiny shape
    assert out["model_flops_per_token"] == 6 * (out["non_embedding_params"] + 64 * 512) + 12 * 2 * 2 * 32 * 64
    assert math.isfinite(out["loss_last"])


def test_gpu_mfu_bench_builds_the_paper_model_shape():
    # Qwen3-8B-Base: 36 layers of 192,946,432 (tests/test_cost_model.py derives it) + the final norm 4,096
    # + the embedding and the untied LM head, 151,936 x 4,096 each: 8,190,735,360 (the card's "8.2B")
    from transformers import Qwen3ForCausalLM

    mod = _mfu_bench()
    cfg = mod.qwen3_config(False, "8b")
    with torch.device("meta"):
        model = Qwen3ForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == 36 * 192_946_432 + 4096 + 2 * 151_936 * 4096
    assert mod.flops_per_token(model, cfg, 4096)[1] == 6_946_075_648


def test_the_cli_and_the_pipeline_train_on_the_same_settings(monkeypatch):
    # issue 12 item 3: `masa train` used cfg.train's seed and temperature, the pipeline a seed per round
    # and temperature 1. Both now call train_settings: seed = run seed * 1000 + round index (round 3 of a
    # run with seed 7: 7 * 1000 + 2 = 7002), temperature 1.
    import argparse

    from masa.commands import train as train_cmd
    from masa.config import load_config
    from masa.runner.settings import train_settings

    cfg = load_config("toy", ["seed=7"])
    t = train_settings(cfg, "grpo", 2)
    assert (t.seed, t.temperature, t.bc_coef) == (7002, 1.0, 0.0)  # GRPO: no behaviour cloning
    assert train_settings(cfg, "masa", 2).bc_coef == cfg.algorithm.expert.bc_coef
    seen = {}
    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--scored", "s", "--out", "o", "--preset", "toy", "--set", "seed=7",
                              "--branch", "grpo", "--round", "2"])
    import masa.runner.training

    def record(model, scored, experts, out, tcfg, **kw):
        seen["tcfg"] = tcfg
        raise ValueError("recorded")

    monkeypatch.setattr(masa.runner.training, "train_round", record)  # `masa train` imports it when it runs
    assert train_cmd.run(args) == 2
    assert seen["tcfg"] == t


def test_derived_training_settings_are_refused_not_overwritten():
    # train.seed / temperature / bc_* are set per branch and round by train_settings: a preset or --set
    # that sets one would be silently overwritten, so the configuration names it and what to set instead
    from masa.config import DERIVED_TRAIN_FIELDS, load_config
    from masa.configbase import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config("toy", ["train.seed=5", "train.temperature=0.6", "train.bc_mode=phase"])
    text = str(e.value)
    assert "train.seed: derived per branch and round" in text and "set seed instead" in text
    assert "train.temperature:" in text and "train.bc_mode:" in text and "set algorithm.expert.mode instead" in text
    from masa.train.config import TrainConfig

    assert set(DERIVED_TRAIN_FIELDS) <= set(TrainConfig.__dataclass_fields__)  # each names a real field
