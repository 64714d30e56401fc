"""bench/probe_meta_interference.py: its readout and split-NLL measures, on hand-computed cases."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

_SPEC = importlib.util.spec_from_file_location(
    "probe_meta_interference", Path(__file__).parents[1] / "bench" / "probe_meta_interference.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_readout_is_the_expected_value_over_the_value_tokens_only():
    # probabilities 0.1 0.2 0.3 0.4 over 4 tokens; the values 0 and 1 are tokens 1 and 2 (p 0.2, 0.3):
    # renormalised over them, E = (0 * 0.2 + 1 * 0.3) / 0.5 = 0.6; their mass is 0.2 + 0.3 = 0.5
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    expected, mass = bench.readout(logits, [1, 2])
    assert expected.item() == pytest.approx(0.6)
    assert mass.item() == pytest.approx(0.5)


def test_readout_follows_the_order_of_value_ids_not_token_ids():
    # the same tokens listed the other way round: token 2 (p 0.3) is value 0, token 1 (p 0.2) value 1
    # E = 0.2 / 0.5 = 0.4
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    assert bench.readout(logits, [2, 1])[0].item() == pytest.approx(0.4)


def test_split_nll_shifts_by_one_and_separates_digit_targets():
    # labels -100, 0, 1: position 0 predicts token 0 (a digit) with p 0.25 -> NLL ln 4; position 1
    # predicts token 1 (not a digit) with p 0.5 -> NLL ln 2; position 2 predicts nothing
    logits = torch.log(torch.tensor([[[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]]]))
    labels = torch.tensor([[-100, 0, 1]])
    digit, other = bench.split_nll(logits, labels, torch.tensor([True, False]))
    assert digit == pytest.approx(math.log(4))
    assert other == pytest.approx(math.log(2))


def test_spearman_of_a_constant_is_undefined_not_an_error():
    # a readout that puts every prompt at the same value has no ranking: nan, not a numpy warning turned 0
    assert math.isnan(bench.spearman([1, 1, 1], [1, 2, 3]))
    # ranks 1 2 3 against 3 2 1: perfectly reversed
    assert bench.spearman([1, 2, 3], [9, 5, 1]) == pytest.approx(-1.0)


class _Fixed:
    """A stand-in "model" that returns the same logits for any input (only the KL's arithmetic is tested)."""

    def __init__(self, probs):
        self.logits = torch.log(torch.tensor(probs))

    def __call__(self, **_):
        return self


def test_anchor_kl_is_kl_of_base_from_model_at_completion_positions():
    # one kept position (labels -100, 1: position 0 predicts token 1); base p = (0.5, 0.5), model
    # q = (0.25, 0.75): KL = 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4 / 3); position 1 is ignored
    batch = (torch.zeros((1, 2), dtype=torch.long), torch.ones((1, 2)), torch.tensor([[-100, 1]]))
    model, base = _Fixed([[[0.25, 0.75], [0.9, 0.1]]]), _Fixed([[[0.5, 0.5], [0.1, 0.9]]])
    assert bench.anchor_kl(model, base, batch).item() == pytest.approx(0.5 * math.log(4 / 3))
    assert bench.anchor_kl(base, base, batch).item() == pytest.approx(0.0)
