"""Toy tokenizer (digits are single tokens, round trip, chat template, save/load) and recipe validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from masa.configbase import ConfigError, from_dict
from masa.toy.recipe import SMOKE, TOY, ToyRecipe, get_recipe
from masa.toy.task import generate_splits
from masa.toy.tokenizer import IM_END, PAD, chat_prompt, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    train, _ = generate_splits(300, 0, seed=0)
    return train_tokenizer([t for p in train for t in (p.question, p.solution)], vocab_size=400)


def test_digits_are_single_tokens(tokenizer) -> None:
    digit_ids = {}
    for d in "0123456789":
        ids = tokenizer(d, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, d
        digit_ids[d] = ids[0]
    # inside numbers and next to other characters every digit is still its own, same token
    for text in ("12345", "x=907, write 7.", "\\boxed{4096}", "10-0-1=9"):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        toks = tokenizer.convert_ids_to_tokens(ids)
        for d in text:
            if d.isdigit():
                assert d in toks
        assert [i for i in ids if i in digit_ids.values()] == [digit_ids[c] for c in text if c.isdigit()]


def test_round_trip_including_unseen_text(tokenizer) -> None:
    train, _ = generate_splits(50, 0, seed=1)
    for text in [p.solution for p in train] + ["Unseen: ∑ émoji 🙂 {\"k\": [1, 2]}\n\ttab"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
        assert tokenizer.unk_token_id not in ids


def test_special_tokens_and_chat_template(tokenizer) -> None:
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD
    assert tokenizer.eos_token_id != tokenizer.pad_token_id
    prompt = chat_prompt(tokenizer, "What is 1 + 2?")
    assert prompt == "<|im_start|>user\nWhat is 1 + 2?<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2
    assert ids.count(tokenizer.eos_token_id) == 1
    # no BOS/EOS is silently added by plain encoding
    assert tokenizer("12")["input_ids"] == tokenizer("12", add_special_tokens=False)["input_ids"]


def test_saved_tokenizer_loads_with_auto_tokenizer(tokenizer, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "ones: 7+5=12, write 2, carry 1."
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert loaded.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                      add_generation_prompt=True) == chat_prompt(tokenizer, "hi")
    assert loaded.eos_token == IM_END and loaded.pad_token == PAD


def test_too_small_vocab_is_rejected() -> None:
    with pytest.raises(ValueError, match="vocab_size must be >= 259"):
        train_tokenizer(["a"], vocab_size=100)


def test_recipe_hash_is_stable_and_sensitive() -> None:
    assert TOY.hash() == ToyRecipe().hash() and len(TOY.hash()) == 16
    assert SMOKE.hash() != TOY.hash()
    assert from_dict(ToyRecipe, {"seed": 1}).hash() != TOY.hash()
    assert get_recipe("smoke") is SMOKE
    with pytest.raises(KeyError, match="valid: analysed, broad, chain, reasoned, smoke, terse, toy"):
        get_recipe("tiny")


def test_recipe_validation_names_every_bad_key() -> None:
    with pytest.raises(ConfigError) as e:
        from_dict(ToyRecipe, {"head_dim": 48, "lr": 0.0, "n_probe": 10, "n_train": 5, "bogus": 1})
    text = str(e.value)
    assert "bogus: unknown key" in text
    with pytest.raises(ConfigError) as e:
        from_dict(ToyRecipe, {"head_dim": 48, "lr": 0.0, "n_probe": 10, "n_train": 5, "meta_reasoning": "long"})
    text = str(e.value)
    for key in ("head_dim", "lr", "n_probe", "meta_reasoning"):
        assert f"{key}:" in text, text
    with pytest.raises(ConfigError, match="solution_analysis: needs task columns"):
        from_dict(ToyRecipe, {"task": "chain", "solution_analysis": True})
    with pytest.raises(ConfigError, match="wander: needs task columns"):
        from_dict(ToyRecipe, {"task": "chain", "wander": 0.1})
    with pytest.raises(ConfigError, match=r"wander: must be in \[0, 1\)"):
        from_dict(ToyRecipe, {"wander": 1.0})
