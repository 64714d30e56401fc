"""Expert selection and targets: hand values, masked-row invariance, loop reference, text rewrite."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.experts import expert_text, observed_targets, phase_batches, phase_lr, select_experts
from masa.algo.meta import MetaPrediction, format_meta_completion, parse_meta


def test_select_experts_hand_values():
    r = torch.tensor([[0.2, 0.9, 0.9, 0.1],    # tie 0.9 at 1 and 2 -> lowest index 1
                      [0.5, 0.4, 0.3, 0.2],    # best 0.5 is NOT strictly above 0.5 -> -1
                      [0.1, 0.95, 0.7, 0.0],   # 0.95 is invalid (parse failure) -> next best 0.7 at 2
                      [0.9, 0.9, 0.9, 0.9]])   # nothing valid -> -1
    valid = torch.tensor([[True] * 4, [True] * 4, [True, False, True, True], [False] * 4])
    assert select_experts(r, valid, min_reward=0.5).tolist() == [1, -1, 2, -1]


def test_select_experts_ignores_invalid_values():
    g = torch.Generator().manual_seed(0)
    r = torch.rand(8, 6, generator=g)
    valid = torch.rand(8, 6, generator=g) < 0.6
    base = select_experts(r, valid, min_reward=0.3)
    for junk in (torch.full_like(r, float("nan")), torch.full_like(r, 5.0)):
        assert torch.equal(select_experts(torch.where(valid, r, junk), valid, min_reward=0.3), base)


@settings(max_examples=60, deadline=None)
@given(B=st.integers(1, 5), Gm=st.integers(1, 6), seed=st.integers(0, 2**31 - 1), thr=st.floats(0, 1))
def test_select_experts_matches_loop(B, Gm, seed, thr):
    g = torch.Generator().manual_seed(seed)
    r = (torch.rand(B, Gm, generator=g) * 4).round() / 4  # coarse values: ties happen
    valid = torch.rand(B, Gm, generator=g) < 0.7
    want = []
    for b in range(B):
        cands = [(float(r[b, j]), -j) for j in range(Gm) if valid[b, j]]
        best = max(cands) if cands else None
        want.append(-best[1] if best and best[0] > thr else -1)
    assert select_experts(r, valid, min_reward=thr).tolist() == want


def test_observed_targets_hand_values():
    G = 4
    correct = torch.tensor([[True, False, True, False],   # 2 of 4; correct lengths 10, 21 -> 15.5 -> 16
                            [False, False, False, False],  # 0 of 4; mean of all (8+9+10+11)/4 = 9.5 -> 10
                            [True, True, True, False],     # only 2 valid rows, both correct: 2/2 * 4 = 4
                            [False] * 4])                  # gated: no rows -> 0, length 1
    lengths = torch.tensor([[10, 30, 21, 50], [8, 9, 10, 11], [6, 7, 999, 999], [0, 0, 0, 0]])
    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, False, False], [False] * 4])
    k, n = observed_targets(correct, lengths, valid, n_solution=G)
    assert k.tolist() == [2, 0, 4, 0]
    assert n.tolist() == [16, 10, 7, 1]  # (6 + 7) / 2 = 6.5 -> 7 (half up)


def test_expert_text_rewrites_values_keeping_reasoning_and_notions():
    meta = format_meta_completion("looks like an easy parity argument", notions=["parity", "modular arithmetic"],
                                  pass_rate=1, solution_length=300)
    out = expert_text(meta, pass_rate=7, solution_length=42)
    assert out.startswith("<meta>looks like an easy parity argument</meta>\n")
    assert parse_meta(out, n_solution=8, max_response_tokens=512) == MetaPrediction(
        ("parity", "modular arithmetic"), 7, 42)


def test_select_experts_shape_error():
    with pytest.raises(ValueError, match=r"\[B, Gm\]"):
        select_experts(torch.zeros(2, 3), torch.ones(2, 2, dtype=torch.bool), min_reward=0.1)


def test_select_experts_threshold_just_below_one():
    # found by hypothesis: a reward of exactly 1 beats a threshold of 0.9999999999999999, which a float32
    # comparison rounded up to 1.0
    assert select_experts(torch.tensor([[1.0]]), torch.tensor([[True]]), min_reward=0.9999999999999999).tolist() == [0]


# ---------------------------------------------------------------- behaviour cloning as a phase (issue 14 item 6)


def test_phase_batches_are_first_in_first_out_and_keep_the_rest():
    # buffer holds 3 (indices 0..2), the round adds 6 (3..8), batches of 4: two full batches in arrival
    # order, the 9th expert waits for the next round
    assert phase_batches(3, 6, batch=4) == ([[0, 1, 2, 3], [4, 5, 6, 7]], [8])
    assert phase_batches(1, 2, batch=4) == ([], [0, 1, 2])  # not full: no phase, all carried
    assert phase_batches(2, 2, batch=4) == ([[0, 1, 2, 3]], [])
    assert phase_batches(0, 0, batch=1) == ([], [])
    with pytest.raises(ValueError, match="batch"):
        phase_batches(1, 1, batch=0)


def test_phase_lr_is_verl_cosine_with_warmup():
    # 4 steps (verl's SFT default epochs over one full batch): warm-up int(0.4) = 0 steps, then
    # lr x 0.5 (1 + cos(pi s / 4)): s=0 -> 1, s=1 -> 0.5 (1 + 0.70711) = 0.85355, s=2 -> 0.5, s=3 -> 0.14645
    got = [phase_lr(s, steps=4, lr=1e-5) for s in range(4)]
    assert got == pytest.approx([1e-5, 0.8535534e-5, 0.5e-5, 0.1464466e-5], rel=1e-6)
    # 10 steps: warm-up 1 step from 0; step 1 starts the cosine at lr, step 4: 0.5 (1 + cos(pi 3 / 9)) = 0.75
    assert phase_lr(0, steps=10, lr=2.0) == 0.0
    assert phase_lr(1, steps=10, lr=2.0) == pytest.approx(2.0)
    assert phase_lr(4, steps=10, lr=2.0) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="step"):
        phase_lr(4, steps=4, lr=1.0)


def test_expert_mode_is_validated_naming_the_valid_ones():
    from masa.algo.config import ExpertConfig
    from masa.configbase import ConfigError, from_dict
    from masa.train.config import TrainConfig

    assert ExpertConfig().mode == "joint" and TrainConfig().bc_mode == "joint"
    with pytest.raises(ValueError, match=r"mode: unknown expert mode 'sft'; valid: joint, phase"):
        ExpertConfig(mode="sft")
    with pytest.raises(ConfigError, match=r"bc_mode: unknown expert mode 'sft'; valid: joint, phase"):
        from_dict(TrainConfig, {"bc_mode": "sft"})
    with pytest.raises(ValueError, match="phase_batch: must be >= 1"):
        ExpertConfig(phase_batch=0)


def test_train_config_carries_the_expert_mode_of_the_run():
    from masa.config import load_config
    from masa.runner.settings import train_settings

    def train_config_for(cfg):
        return train_settings(cfg, "masa-efficient", 0)

    # the toy preset's meta SFT phase (masa/presets/toy.yaml)
    toy = train_config_for(load_config("toy"))
    assert (toy.bc_mode, toy.bc_phase_batch, toy.bc_phase_steps, toy.bc_phase_lr, toy.bc_phase_anchor) == \
        ("phase", 64, 8, 1.5e-4, 10.0)
    phase = train_config_for(load_config("toy", ["algorithm.expert.phase_steps=2", "algorithm.expert.phase_lr=3e-5",
                                                 "algorithm.expert.phase_anchor=1.5"]))
    assert (phase.bc_mode, phase.bc_phase_batch, phase.bc_phase_steps, phase.bc_phase_lr, phase.bc_phase_anchor) == \
        ("phase", 64, 2, 3e-5, 1.5)
    joint = train_config_for(load_config("toy", ["algorithm.expert.mode=joint", "algorithm.expert.phase_anchor=0",
                                                 "algorithm.expert.bc_coef=0.5"]))
    assert (joint.bc_mode, joint.bc_coef) == ("joint", 0.5)
    assert train_config_for(load_config("smoke")).bc_phase_anchor == 0.0  # off unless asked for
    own = train_config_for(load_config("toy", ["algorithm.expert.phase_moments=own"]))
    assert (toy.bc_phase_moments, own.bc_phase_moments) == ("shared", "own")


def test_phase_anchor_is_refused_outside_phase_mode_or_below_zero():
    from masa.algo.config import ExpertConfig

    with pytest.raises(ValueError, match="phase_anchor.*needs mode 'phase'"):
        ExpertConfig(phase_anchor=1.0)
    with pytest.raises(ValueError, match="phase_anchor.*must be >= 0"):
        ExpertConfig(mode="phase", phase_anchor=-1.0)


def test_phase_moments_are_refused_outside_phase_mode_or_by_an_unknown_name():
    from masa.algo.config import ExpertConfig
    from masa.train.config import TrainConfig

    with pytest.raises(ValueError, match="phase_moments.*needs mode 'phase'"):
        ExpertConfig(phase_moments="own")
    with pytest.raises(ValueError, match="unknown phase moments 'separate'; valid: shared, own"):
        ExpertConfig(mode="phase", phase_moments="separate")
    with pytest.raises(ValueError, match="unknown phase moments 'separate'; valid: shared, own"):
        TrainConfig(bc_mode="phase", bc_phase_moments="separate")


def test_expert_rounds_stop_the_picking_and_the_cloning_after_the_first_rounds():
    from masa.algo.config import ExpertConfig
    from masa.config import load_config
    from masa.runner.settings import algorithm_for, train_settings

    with pytest.raises(ValueError, match=r"rounds: must be >= 0 \(0: every round\)"):
        ExpertConfig(rounds=-1)
    joint = ["algorithm.expert.mode=joint", "algorithm.expert.phase_anchor=0", "algorithm.expert.bc_coef=0.5"]
    cfg = load_config("toy", [*joint, "algorithm.expert.rounds=3"])
    # rounds 0, 1, 2 pick experts (the score step's algorithm) and clone them (the train step's bc_coef);
    # from round 3 on neither; the rollout step, which asks without a round, keeps the run's settings
    assert [algorithm_for(cfg, "masa-efficient", r).expert.enabled for r in range(5)] == [True] * 3 + [False] * 2
    assert [train_settings(cfg, "masa-efficient", r).bc_coef for r in range(5)] == [0.5] * 3 + [0.0] * 2
    assert algorithm_for(cfg, "masa-efficient").expert.enabled
    every = load_config("toy", [*joint, "algorithm.expert.rounds=0"])  # 0: every round, as released
    assert all(algorithm_for(every, "masa-efficient", r).expert.enabled for r in (0, 20, 200))
