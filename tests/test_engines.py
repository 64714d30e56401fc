"""Engines: sampling contract, finish reasons, log-probs against a transformers forward pass, weight reload.

The slow tests start the REAL vLLM CPU engine (once per module) and the transformers backend on the tiny
random Qwen2 model of `tests/tiny_model.py`.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from masa.engines import (
    EngineConfig,
    GenerationRequest,
    ModelNotFoundError,
    SamplingSpec,
    finish_reason,
    make_engine,
    resolve_model_dir,
)
from masa.engines.hf_engine import processed_logits

# ------------------------------------------------------------------ pure parts


def test_finish_reason_distinguishes_cutoff_from_length():
    spec = SamplingSpec(max_tokens=64, budget=16)
    assert finish_reason(True, 16, spec) == "stop"  # EOS on the budget's last token is still a stop
    assert finish_reason(False, 16, spec) == "cutoff"
    assert finish_reason(False, 64, SamplingSpec(max_tokens=64)) == "length"
    # A budget at or above max_tokens is no cutoff: the global limit bound the sample.
    assert finish_reason(False, 64, SamplingSpec(max_tokens=64, budget=64)) == "length"
    assert finish_reason(False, 64, SamplingSpec(max_tokens=64, budget=100)) == "length"
    assert SamplingSpec(max_tokens=64, budget=100).limit == 64
    assert SamplingSpec(max_tokens=64, budget=16).limit == 16


def test_sampling_spec_reports_every_bad_field():
    with pytest.raises(ValueError) as e:
        SamplingSpec(n=0, temperature=0, top_p=1.5, top_k=0, max_tokens=0, budget=0, stop=("",))
    for key in ("n:", "temperature:", "top_p:", "top_k:", "max_tokens:", "budget:", "stop:"):
        assert key in str(e.value)


def test_processed_logits_top_k_top_p_by_hand():
    # logits [2, 1, 0, -inf-ish]; softmax of [2,1,0,-10] ~ [0.665, 0.245, 0.090, 0.000]
    x = torch.tensor([[2.0, 1.0, 0.0, -10.0]])
    k2 = processed_logits(x, temperature=1.0, top_p=1.0, top_k=2)
    assert torch.isinf(k2[0, 2:]).all() and torch.equal(k2[0, :2], x[0, :2])
    # top_p=0.8: cumulative before each sorted token = [0, .665, .910, ...] -> keep tokens 0 and 1.
    p8 = processed_logits(x, temperature=1.0, top_p=0.8, top_k=-1)
    assert torch.isfinite(p8[0, :2]).all() and torch.isinf(p8[0, 2:]).all()
    # top_p=0.5 keeps only the argmax (its own mass 0.665 already exceeds 0.5).
    p5 = processed_logits(x, temperature=1.0, top_p=0.5, top_k=-1)
    assert torch.isfinite(p5[0, 0]) and torch.isinf(p5[0, 1:]).all()
    # temperature 2 halves the logits.
    assert torch.allclose(processed_logits(x, temperature=2.0, top_p=1.0, top_k=-1), x / 2)


def test_missing_model_fails_before_generation_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    for backend in ("vllm", "transformers"):
        with pytest.raises(ModelNotFoundError, match="no-such-model"):
            make_engine(EngineConfig(model=str(missing), backend=backend))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="config.json"):
        resolve_model_dir(str(empty))


def test_unknown_backend_lists_valid_ones(tiny_model_dir):
    with pytest.raises(KeyError, match="transformers, vllm"):
        make_engine(EngineConfig(model=str(tiny_model_dir), backend="tgi"))  # type: ignore[arg-type]


# ------------------------------------------------------------------ helpers


def _prompt_ids(tokenizer, text: str) -> tuple[int, ...]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        tokenize=True, return_dict=False)
    return tuple(int(i) for i in ids)


def _reference_logprobs(model, sample) -> torch.Tensor:
    """Raw log-softmax (T=1) of each response token from one float32 forward pass over prompt+response."""
    ids = torch.tensor([list(sample.prompt_token_ids) + list(sample.response_token_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    p = len(sample.prompt_token_ids)
    lp = torch.log_softmax(logits[p - 1: -1], dim=-1)
    return lp.gather(-1, torch.tensor(sample.response_token_ids)[:, None]).squeeze(-1)


def _hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def _assert_logprobs_match(model, samples, tol=1e-3):
    for s in samples:
        assert len(s.logprobs) == len(s.response_token_ids) > 0
        ref = _reference_logprobs(model, s)
        mad = (torch.tensor(s.logprobs) - ref).abs().mean().item()
        assert mad <= tol, f"mean |logprob - transformers| = {mad:.2e} > {tol}"


def _perturbed_copy(src, dst, seed: int = 1):
    """A copy of the checkpoint with every weight replaced by random values of the same shape."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    g = torch.Generator().manual_seed(seed)
    for f in dst.glob("*.safetensors"):
        tensors = load_file(f)
        save_file({k: torch.randn(v.shape, generator=g) * v.float().std().clamp_min(0.02) for k, v in
                   tensors.items()}, f, metadata={"format": "pt"})
    return dst


# ------------------------------------------------------------------ real engines


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_dir):
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=512))
    yield engine
    engine.close()


@pytest.mark.slow
def test_vllm_samples_logprobs_match_transformers_forward(vllm_engine, tiny_model_dir):
    tok = vllm_engine.tokenizer
    reqs = [GenerationRequest(_prompt_ids(tok, q), SamplingSpec(n=3, max_tokens=24, seed=7))
            for q in ("What is 2 + 3?", "Solve for x: 3x + 1 = 10.")]
    out = vllm_engine.generate(reqs)
    assert [len(o) for o in out] == [3, 3]
    for req, group in zip(reqs, out, strict=True):
        for s in group:
            assert s.prompt_token_ids == req.prompt_token_ids
            assert s.finish_reason in ("stop", "length")
            assert len(s.response_token_ids) <= 24
            assert all(lp <= 0 and math.isfinite(lp) for lp in s.logprobs)
    _assert_logprobs_match(_hf_model(tiny_model_dir), [s for g in out for s in g])
    # Same seed -> same samples; distinct samples within a request (seed + i per sample).
    again = vllm_engine.generate(reqs)
    assert [[s.response_token_ids for s in g] for g in again] == [[s.response_token_ids for s in g] for g in out]
    assert len({s.response_token_ids for s in out[0]}) > 1


@pytest.mark.slow
def test_vllm_temperature_keeps_raw_logprobs(vllm_engine, tiny_model_dir):
    tok = vllm_engine.tokenizer
    req = GenerationRequest(_prompt_ids(tok, "What is 2 + 3?"),
                            SamplingSpec(n=2, max_tokens=16, seed=3, temperature=0.5, top_p=0.9, top_k=50))
    _assert_logprobs_match(_hf_model(tiny_model_dir), vllm_engine.generate([req])[0])


@pytest.mark.slow
def test_vllm_budget_cuts_off_and_stop_strings_stop(vllm_engine):
    tok = vllm_engine.tokenizer
    ids = _prompt_ids(tok, "What is 2 + 3?")
    long, cut = vllm_engine.generate([
        GenerationRequest(ids, SamplingSpec(n=4, max_tokens=48, seed=5)),
        GenerationRequest(ids, SamplingSpec(n=4, max_tokens=48, budget=6, seed=5)),
    ])
    for s_long, s_cut in zip(long, cut, strict=True):
        # Same seed, same prefix: the budgeted sample is the first 6 tokens of the unbudgeted one.
        assert s_cut.response_token_ids == s_long.response_token_ids[:6] or s_cut.finish_reason == "stop"
        if len(s_long.response_token_ids) > 6:
            assert s_cut.finish_reason == "cutoff" and len(s_cut.response_token_ids) == 6
    # A stop string taken from a sampled text must stop there, and not appear in the returned text.
    text = next(s.text for s in long if len(s.text) > 12)
    stop = text[4:8]
    (stopped,) = vllm_engine.generate([GenerationRequest(ids, SamplingSpec(n=4, max_tokens=48, seed=5,
                                                                           stop=(stop,)))])
    hit = [s for s in stopped if s.finish_reason == "stop"]
    assert hit, "the sample whose text contained the stop string must stop on it"
    assert all(stop not in s.text for s in stopped)


@pytest.mark.slow
def test_vllm_texts_decoded_at_the_end_equal_vllms_own_detokenizing(vllm_engine):
    """Without stop strings the engine turns vLLM's per-token detokenizing off and decodes the texts in
    one batch at the end; they must be the strings vLLM itself would have produced (same seeds, so the
    same tokens), in request and sample order, beside a request with stop strings in the same batch."""
    import vllm

    tok = vllm_engine.tokenizer
    reqs = [GenerationRequest(_prompt_ids(tok, q), SamplingSpec(n=3, max_tokens=32, seed=21 + i, stop=stop))
            for i, (q, stop) in enumerate((("What is 2 + 3?", ()), ("Solve 3x = 9.", ("\u2603",)),
                                           ("What is 7 - 4?", ())))]
    ours = vllm_engine.generate(reqs)
    theirs = vllm_engine.llm.generate(
        [{"prompt_token_ids": list(r.prompt_token_ids)} for r in reqs],
        [vllm.SamplingParams(n=3, max_tokens=32, seed=r.sampling.seed, stop=list(r.sampling.stop) or None,
                             logprobs=0) for r in reqs], use_tqdm=False)
    assert [[s.text for s in g] for g in ours] == [[c.text for c in o.outputs] for o in theirs]
    assert [[s.response_token_ids for s in g] for g in ours] == [[tuple(c.token_ids) for c in o.outputs] for o in theirs]
    assert any(s.text for g in ours for s in g)


@pytest.mark.slow
def test_vllm_load_weights_in_place_follows_new_weights(vllm_engine, tiny_model_dir, tmp_path):
    new_dir = _perturbed_copy(tiny_model_dir, tmp_path / "new")
    req = [GenerationRequest(_prompt_ids(vllm_engine.tokenizer, "What is 2 + 3?"),
                             SamplingSpec(n=2, max_tokens=16, seed=11))]
    before = vllm_engine.generate(req)[0]
    try:
        vllm_engine.load_weights(new_dir)
        after = vllm_engine.generate(req)[0]
        _assert_logprobs_match(_hf_model(new_dir), after)  # log-probs are the NEW model's
        assert [s.response_token_ids for s in after] != [s.response_token_ids for s in before]
    finally:
        vllm_engine.load_weights(tiny_model_dir)
    # Back on the original weights (and prefix cache reset), the original samples come back exactly.
    assert [s.response_token_ids for s in vllm_engine.generate(req)[0]] == [s.response_token_ids for s in before]


@pytest.mark.slow
def test_transformers_backend_contract(tiny_model_dir, tmp_path):
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="transformers"))
    ids = _prompt_ids(engine.tokenizer, "What is 2 + 3?")
    full, cut = engine.generate([GenerationRequest(ids, SamplingSpec(n=3, max_tokens=20, seed=2)),
                                 GenerationRequest(ids, SamplingSpec(n=3, max_tokens=20, budget=5, seed=2))])
    _assert_logprobs_match(_hf_model(tiny_model_dir), full + cut, tol=1e-5)
    for a, b in zip(full, cut, strict=True):
        assert b.response_token_ids == a.response_token_ids[:5] or a.finish_reason == "stop"
        if len(a.response_token_ids) > 5:
            assert b.finish_reason == "cutoff"
    assert [s.response_token_ids for s in engine.generate([GenerationRequest(ids, SamplingSpec(
        n=3, max_tokens=20, seed=2))])[0]] == [s.response_token_ids for s in full]
    text = next(s.text for s in full if len(s.text) > 12)
    (stopped,) = engine.generate([GenerationRequest(ids, SamplingSpec(n=3, max_tokens=20, seed=2,
                                                                      stop=(text[4:8],)))])
    assert any(s.finish_reason == "stop" for s in stopped)
    assert all(text[4:8] not in s.text for s in stopped)
    new_dir = _perturbed_copy(tiny_model_dir, tmp_path / "new")
    engine.load_weights(new_dir)
    _assert_logprobs_match(_hf_model(new_dir), engine.generate([GenerationRequest(ids, SamplingSpec(
        n=2, max_tokens=8, seed=2))])[0], tol=1e-5)


@pytest.mark.slow
def test_vllm_seeded_batch_larger_than_one_step_budget(vllm_engine):
    # Regression: more prompt tokens than one scheduler step takes made vLLM-CPU split a prefill and then
    # crash rewinding the seeded request's CPU generator; the engine disables chunked prefill on CPU.
    # Distinct prompts (a shared one would be served from the prefix cache, with nothing to split).
    prompts = [_prompt_ids(vllm_engine.tokenizer, f"{i} * {i}? " + "What is 2 + 3? " * 55) for i in range(12)]
    assert all(300 < len(ids) < 480 for ids in prompts) and sum(map(len, prompts)) > 2048
    out = vllm_engine.generate([GenerationRequest(ids, SamplingSpec(n=2, max_tokens=4, seed=i))
                                for i, ids in enumerate(prompts)])
    assert [len(g) for g in out] == [2] * 12


def test_processed_logits_per_row_parameters_match_scalar_calls():
    x = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    temps, ps, ks = [1.0, 0.5, 2.0], [1.0, 0.7, 0.9], [-1, 5, 20]
    rows = processed_logits(x, temperature=torch.tensor(temps), top_p=torch.tensor(ps), top_k=torch.tensor(ks))
    for i in range(3):
        assert torch.equal(rows[i], processed_logits(x[i: i + 1], temperature=temps[i], top_p=ps[i], top_k=ks[i])[0])


@pytest.mark.slow
def test_transformers_batch_samples_do_not_depend_on_the_batch(tiny_model_dir):
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="transformers"))
    tok = engine.tokenizer
    a = GenerationRequest(_prompt_ids(tok, "What is 2 + 3?"), SamplingSpec(n=2, max_tokens=12, seed=4))
    b = GenerationRequest(_prompt_ids(tok, "Solve for x: 3x + 1 = 10, step by step."),
                          SamplingSpec(n=3, max_tokens=6, budget=4, seed=9, temperature=0.7, top_k=20))
    together = engine.generate([a, b])
    assert [len(g) for g in together] == [2, 3]
    assert all(len(s.response_token_ids) <= 4 for s in together[1])
    for req, group in zip((a, b), together, strict=True):
        alone = engine.generate([req])[0]
        assert [s.response_token_ids for s in alone] == [s.response_token_ids for s in group]
        assert max(abs(x - y) for s, t in zip(alone, group, strict=True)
                   for x, y in zip(s.logprobs, t.logprobs, strict=True)) < 1e-4
    _assert_logprobs_match(_hf_model(tiny_model_dir), together[0] + together[1], tol=1e-5)


def test_max_model_len_is_lowered_to_the_models_positions(tmp_path):
    # A benchmark's default budget (1024 prompt + 256 new) on a 512-position model: vLLM would refuse
    # it; we lower it to what the model has and leave smaller requests alone.
    import json

    from masa.engines.vllm_engine import fitted_max_model_len

    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    assert fitted_max_model_len(tmp_path, 1280) == 512
    assert fitted_max_model_len(tmp_path, 300) == 300
    assert fitted_max_model_len(tmp_path / "missing", 1280) == 1280
