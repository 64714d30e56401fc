"""Solution and meta rewards: hand-computed values, masked-row invariance, loop vs vectorised, bounds."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from masa.algo.rewards import (
    META_REWARDS,
    PASS_RATE_REWARDS,
    length_reward,
    meta_reward,
    normalize_notions,
    notion_rewards,
    observed_pass_rate,
    pass_rate_reward,
    singularize,
    solution_reward,
)


def test_solution_reward_zero_for_cutoff():
    correct = torch.tensor([True, True, False, False])
    cutoff = torch.tensor([False, True, False, True])
    assert solution_reward(correct, cutoff).tolist() == [1.0, 0.0, 0.0, 0.0]


def test_pass_rate_reward_hand_values():
    # G = 8, observed 5 of 8 correct: p = 0.625.
    #   k = 5: |0.625 - 0.625| = 0    -> 0.01 ** 0    = 1
    #   k = 3: |0.625 - 0.375| = 0.25 -> 0.01 ** 0.25 = 10 ** -0.5 = 0.316228
    #   k = 8: |0.625 - 1|     = 0.375 -> 10 ** -0.75 = 0.177828
    # second prompt all correct (p = 1), k = 0: off by G -> 0.01
    observed = torch.tensor([0.625, 1.0])
    pred = torch.tensor([[5, 3, 8], [0, 8, 8]])
    r = pass_rate_reward(pred, observed, n_solution=8)
    expected = torch.tensor([[1.0, 10 ** -0.5, 10 ** -0.75], [0.01, 1.0, 1.0]])
    torch.testing.assert_close(r, expected)


def test_linear_pass_rate_reward_hand_values():
    # the same rows under "linear" (1 - |p - k/G|):
    #   p = 0.625: k = 5 -> 1; k = 3 -> 1 - 0.25 = 0.75; k = 8 -> 1 - 0.375 = 0.625
    #   p = 1: k = 0 -> 1 - 1 = 0; k = 8 -> 1
    observed = torch.tensor([0.625, 1.0])
    pred = torch.tensor([[5, 3, 8], [0, 8, 8]])
    r = pass_rate_reward(pred, observed, n_solution=8, variant="linear")
    torch.testing.assert_close(r, torch.tensor([[1.0, 0.75, 0.625], [0.0, 1.0, 1.0]]))
    assert PASS_RATE_REWARDS.names() == ["exponential", "linear"]
    with pytest.raises(KeyError, match="unknown pass-rate reward 'square'; valid: exponential, linear"):
        pass_rate_reward(pred, observed, n_solution=8, variant="square")


def test_exponential_pays_the_mode_linear_the_median():
    # A prompt whose observed count (G = 8) is 0 with probability 0.4, 4 with 0.3 and 8 with 0.3:
    # the mode is 0, the median 4 (cumulative 0.4 at 0, 0.7 at 4). Expected reward of a constant k:
    #   exponential, k = 0: 0.4 * 1 + 0.3 * 0.01 ** 0.5 + 0.3 * 0.01 = 0.4 + 0.03 + 0.003 = 0.433
    #                k = 4: 0.4 * 0.1 + 0.3 * 1 + 0.3 * 0.1        = 0.04 + 0.3 + 0.03 = 0.37
    #   linear,      k = 0: 0.4 * 1 + 0.3 * 0.5 + 0.3 * 0         = 0.55
    #                k = 4: 0.4 * 0.5 + 0.3 * 1 + 0.3 * 0.5       = 0.65
    # so the paper's reward pays the mode and "linear" the median, the MAE's minimiser.
    observed = torch.tensor([0.0, 0.5, 1.0])
    weight = torch.tensor([0.4, 0.3, 0.3])
    k = torch.tensor([[0, 4]] * 3)

    def expected(variant: str) -> Tensor:
        return (weight.unsqueeze(-1) * pass_rate_reward(k, observed, n_solution=8, variant=variant)).sum(0)

    torch.testing.assert_close(expected("exponential"), torch.tensor([0.433, 0.37]))
    torch.testing.assert_close(expected("linear"), torch.tensor([0.55, 0.65]))
    best = {v: int(torch.stack([(weight * pass_rate_reward(torch.full((3, 1), c), observed, n_solution=8,
                                                             variant=v)[:, 0]).sum() for c in range(9)]).argmax())
            for v in ("exponential", "linear")}
    assert best == {"exponential": 0, "linear": 4}


def test_unknown_pass_rate_reward_names_the_valid_ones():
    from masa.algo.config import RewardConfig

    with pytest.raises(ValueError, match="unknown pass-rate reward 'square'; valid: exponential, linear"):
        RewardConfig(pass_rate_reward="square")


def test_observed_pass_rate_counts_only_valid_rows():
    # prompt 0: 4 valid rows, 2 correct (the invalid 5th is "correct" garbage) -> 0.5; prompt 1: no row -> 0
    correct = torch.tensor([[True, False, True, False, True], [True, True, False, False, False]])
    valid = torch.tensor([[True, True, True, True, False], [False] * 5])
    assert observed_pass_rate(correct, valid).tolist() == [0.5, 0.0]


def test_length_reward_hand_values_inclusive_and_strict():
    # correct lengths {10, 30, 40} (20 is incorrect): range [10, 40].
    lengths = torch.tensor([[10, 20, 30, 40], [10, 20, 30, 40]])
    correct = torch.tensor([[True, False, True, True], [False] * 4])
    pred = torch.tensor([[10, 25, 40, 41, 5, 20], [10, 25, 40, 41, 5, 20]])
    inclusive = length_reward(pred, lengths, correct)
    strict = length_reward(pred, lengths, correct, strict=True)
    assert inclusive.tolist() == [[1, 1, 1, 0, 0, 1], [0] * 6]  # no correct rollout -> 0
    assert strict.tolist() == [[0, 1, 0, 0, 0, 1], [0] * 6]  # the bounds themselves miss


def test_length_reward_single_correct_rollout():
    # one correct rollout of length 17: inclusive pays exactly 17, strict can never pay
    lengths, correct = torch.tensor([[17, 5]]), torch.tensor([[True, False]])
    pred = torch.tensor([[17, 16, 18]])
    assert length_reward(pred, lengths, correct).tolist() == [[1, 0, 0]]
    assert length_reward(pred, lengths, correct, strict=True).tolist() == [[0, 0, 0]]


def _loop_length(pred, lengths, correct, strict):
    out = torch.zeros(pred.shape)
    for b in range(pred.shape[0]):
        cl = [int(lengths[b, g]) for g in range(lengths.shape[1]) if correct[b, g]]
        for j in range(pred.shape[1]):
            L = int(pred[b, j])
            ok = cl and ((min(cl) < L < max(cl)) if strict else (min(cl) <= L <= max(cl)))
            out[b, j] = float(bool(ok))
    return out


def _loop_pass(pred, observed, G):
    return torch.tensor([[0.01 ** abs(float(observed[b]) - int(pred[b, j]) / G) for j in range(pred.shape[1])]
                         for b in range(pred.shape[0])])


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_loop_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, G, Gm = 6, 8, 5
    lengths = torch.randint(1, 50, (B, G), generator=g)
    correct = torch.rand(B, G, generator=g) < 0.4
    pred_len = torch.randint(1, 55, (B, Gm), generator=g)
    pred_k = torch.randint(0, G + 1, (B, Gm), generator=g)
    observed = observed_pass_rate(correct, torch.ones(B, G, dtype=torch.bool))
    for strict in (False, True):
        torch.testing.assert_close(length_reward(pred_len, lengths, correct, strict=strict),
                                   _loop_length(pred_len, lengths, correct, strict))
    torch.testing.assert_close(pass_rate_reward(pred_k, observed, n_solution=G), _loop_pass(pred_k, observed, G))


def test_length_reward_ignores_incorrect_and_masked_rows():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 50, (4, 6), generator=g)
    correct = torch.rand(4, 6, generator=g) < 0.5
    pred = torch.randint(1, 55, (4, 3), generator=g)
    base = length_reward(pred, lengths, correct)
    scrambled = torch.where(correct, lengths, torch.randint(1000, 2000, (4, 6), generator=g))
    assert torch.equal(length_reward(pred, scrambled, correct), base)


@pytest.mark.parametrize("word, singular", [
    ("fractions", "fraction"), ("identities", "identity"), ("series", "series"), ("boxes", "box"),
    ("matches", "match"), ("classes", "class"), ("radius", "radius"), ("analysis", "analysis"),
    ("combinatorics", "combinatorics"), ("vertices", "vertex"), ("matrices", "matrix"), ("axes", "axis"),
    ("cosines", "cosine"), ("sum", "sum"), ("its", "its"), ("probabilities", "probability"),
])
def test_singularize(word, singular):
    assert singularize(word) == singular


def test_normalize_notions_drops_problem_words_and_duplicates():
    problem = "Find the SUM of the fractions 1/2 and 1/3."
    got = normalize_notions(["Fractions", "Common Denominators", "sum", "common denominator", "  "], problem)
    assert got == ("common denominator",)


def test_notion_reward_hand_value():
    problem = "Find the sum of the fractions 1/2 and 1/3."
    texts = [
        "Use a common denominator of 6: 3/6 + 2/6 = 5/6.",           # correct
        "The least common multiple is 6; with common denominators we get 5/6.",  # correct
        "A common denominator is 5, so 2/5.",                          # incorrect
        "The least common multiple is 5; answer 2/5.",                  # incorrect
    ]
    correct = [True, True, False, False]
    # after normalisation "fraction" and "sum" are in the problem and dropped; remaining:
    #   common denominator:    +1 (t0) +1 (t1) -1 (t2)  = +1 > 0
    #   least common multiple: +1 (t1)        -1 (t3)  =  0    (not positive)
    #   -> share 1/2.  "summation" would not match "sum" (whole words only).
    preds = [["Fractions", "common denominators", "Least Common Multiple", "Sum"],
             ["sum"],            # nothing left after removing problem words -> 0
             None,               # parse failure -> 0
             ["common denominator", "common denominator"]]  # duplicate counts once -> 1
    r = notion_rewards(preds, problem=problem, solution_texts=texts, solution_correct=correct)
    assert r.tolist() == [0.5, 0.0, 0.0, 1.0]


def test_notion_reward_whole_word_only():
    r = notion_rewards([["sum"]], problem="x", solution_texts=["a summary"], solution_correct=[True])
    assert r.tolist() == [0.0]
    r = notion_rewards([["sum"]], problem="x", solution_texts=["the sums are"], solution_correct=[True])
    assert r.tolist() == [1.0]


def test_meta_reward_weights_and_parse_failures():
    r_pass = torch.tensor([[0.5, 0.5]])
    r_len = torch.tensor([[1.0, 1.0]])
    r_not = torch.tensor([[0.0, 0.0]])
    parsed = torch.tensor([[True, False]])
    # equal weights: (0.5 + 1 + 0) / 3 = 0.5; unparsed -> 0
    torch.testing.assert_close(meta_reward(r_pass, r_len, r_not, parsed), torch.tensor([[0.5, 0.0]]))
    # weights 2, 1, 1: (2*0.5 + 1*1 + 1*0) / 4 = 0.5; pass-rate-only: 0.5
    torch.testing.assert_close(meta_reward(r_pass, r_len, r_not, parsed, weight_pass_rate=2.0),
                               torch.tensor([[0.5, 0.0]]))
    torch.testing.assert_close(meta_reward(r_pass, r_len, r_not, parsed, variant="pass-rate-only"),
                               torch.tensor([[0.5, 0.0]]))
    with pytest.raises(KeyError, match="valid: pass-rate-only, weighted-mean"):
        meta_reward(r_pass, r_len, r_not, parsed, variant="mean")
    with pytest.raises(ValueError, match="weights"):
        meta_reward(r_pass, r_len, r_not, parsed, weight_pass_rate=0.0, weight_length=0.0, weight_notion=0.0)
    assert META_REWARDS.names() == ["pass-rate-only", "weighted-mean"]


@settings(max_examples=60, deadline=None)
@given(G=st.integers(2, 16), Gm=st.integers(1, 8), B=st.integers(1, 5), seed=st.integers(0, 2**31 - 1),
       w=st.tuples(*[st.floats(0, 5)] * 3).filter(lambda t: sum(t) > 0.01))
def test_all_rewards_in_unit_interval(G, Gm, B, seed, w):
    g = torch.Generator().manual_seed(seed)
    correct = torch.rand(B, G, generator=g) < 0.5
    lengths = torch.randint(1, 100, (B, G), generator=g)
    pred_k = torch.randint(0, G + 1, (B, Gm), generator=g)
    pred_len = torch.randint(1, 120, (B, Gm), generator=g)
    rp = pass_rate_reward(pred_k, observed_pass_rate(correct, torch.ones_like(correct)), n_solution=G)
    rl = length_reward(pred_len, lengths, correct)
    rn = torch.rand(B, Gm, generator=g)
    r = meta_reward(rp, rl, rn, torch.rand(B, Gm, generator=g) < 0.8, weight_pass_rate=w[0],
                    weight_length=w[1], weight_notion=w[2])
    for t in (rp, rl, r):
        assert bool(((t >= 0) & (t <= 1 + 1e-6)).all())
    assert bool((rp >= 0.01 - 1e-7).all())
    assert not any(math.isnan(x) for x in r.flatten().tolist())


@settings(max_examples=50, deadline=None)
@given(notions=st.lists(st.text(max_size=15), max_size=5), texts=st.lists(st.text(max_size=40), min_size=1, max_size=4),
       data=st.data())
def test_notion_reward_in_unit_interval(notions, texts, data):
    correct = data.draw(st.lists(st.booleans(), min_size=len(texts), max_size=len(texts)))
    r = notion_rewards([notions], problem="p", solution_texts=texts, solution_correct=correct)
    assert 0.0 <= float(r[0]) <= 1.0


def test_field_components_zero_only_the_invalid_field():
    # per-field scoring (issue 14 item 4): row 0 all valid, row 1 a bad length, row 2 a bad pass rate
    # and bad notions; weighted-mean with equal weights then gives
    #   row 0: (0.5 + 1 + 0.25) / 3 = 0.58333, row 1: (0.5 + 0 + 0.25) / 3 = 0.25, row 2: (0 + 1 + 0) / 3
    from masa.algo.rewards import field_components, meta_reward

    r_pass, r_len, r_not = torch.tensor([[0.5] * 3]), torch.tensor([[1.0] * 3]), torch.tensor([[0.25] * 3])
    has_p, has_l, has_n = torch.tensor([[True, True, False]]), torch.tensor([[True, False, True]]), \
        torch.tensor([[True, True, False]])
    p, length, n = field_components(r_pass, r_len, r_not, has_p, has_l, has_n)
    assert p.tolist() == [[0.5, 0.5, 0.0]] and length.tolist() == [[1.0, 0.0, 1.0]] and n.tolist() == [[0.25, 0.25, 0.0]]
    r = meta_reward(p, length, n, has_p | has_l | has_n)
    assert r[0].tolist() == pytest.approx([1.75 / 3, 0.75 / 3, 1 / 3])
