"""The rollout step on the REAL vLLM CPU engine: grpo, masa, masa-efficient (gating and cutoff).

The policy is the tiny Qwen2 model overfitted (in ~3 s) to answer every meta prompt of the test problems
with a meta JSON whose pass_rate is 0, 2 or 4 (a per-problem solution_length), so the meta groups' medians
vary from prompt to prompt and gating/cutoff have real decisions to make.
"""

from __future__ import annotations

import dataclasses
import json

import pyarrow.parquet as pq
import pytest
import torch

from masa.algo.config import AlgorithmConfig, CutoffConfig, GatingConfig
from masa.algo.cutoff import cutoff_budget
from masa.algo.gating import gating_decision, round_generator
from masa.algo.meta import render_meta_prompt
from masa.data.records import Problem, write_verl_parquet
from masa.engines import EngineConfig, make_engine
from masa.runner.rollout import (
    SamplingSettings,
    load_batch,
    prepare_prompts,
    request_seed,
    rollout,
    run_rollout_step,
    shard_schema,
)

G, GM, T = 4, 4, 32
# problem -> predicted solution_length taught to the model (5 -> budget 10 < T: cutoff; 30 -> 60 > T: none)
TAUGHT = {"What is 1 + 1?": 5, "Compute 3 * 7.": 30, "Solve x + 2 = 5.": 5, "Is 9 a prime?": 30}
PROBLEMS = [Problem(f"p{i}", q, str(i)) for i, q in enumerate(TAUGHT)]
SETTINGS = SamplingSettings(max_response_tokens=T, max_prompt_tokens=256)


def _algo(name: str, **gating) -> AlgorithmConfig:
    g = dict(min_rounds=1, window=1, mae_threshold=0.2, explore_share=0.0) | gating
    return AlgorithmConfig(name=name, n_solution=G, n_meta=GM, gating=GatingConfig(**g),
                           cutoff=CutoffConfig(multiplier=2.0, min_tokens=4))


@pytest.fixture(scope="module")
def meta_model_dir(tiny_model_dir, tmp_path_factory):
    from tiny_model import overfit_tiny_model

    pairs = [(render_meta_prompt(q, n_solution=G, max_response_tokens=T),
              json.dumps({"math_notion": ["arithmetic"], "pass_rate": k, "solution_length": n}))
             for q, n in TAUGHT.items() for k in (0, 2, 4)]
    # Per-token loss floor: the pass_rate digit is a 3-way choice (ln 3 over ~25 tokens ~ 0.045).
    return overfit_tiny_model(tiny_model_dir, tmp_path_factory.mktemp("meta_model"), pairs, steps=150,
                              target_loss=0.048)


@pytest.fixture(scope="module")
def engine(meta_model_dir):
    e = make_engine(EngineConfig(model=str(meta_model_dir), backend="vllm", max_model_len=512))
    yield e
    e.close()


# ------------------------------------------------------------------ pure parts


def test_request_seed_is_a_pure_function_of_round_prompt_path():
    assert request_seed(0, 1, "p0", "meta") == request_seed(0, 1, "p0", "meta")
    seeds = {request_seed(s, r, p, path) for s in (0, 1) for r in (0, 1) for p in ("p0", "p1")
             for path in ("meta", "solution")}
    assert len(seeds) == 16
    assert all(0 <= s < 2**30 for s in seeds)


def test_long_prompts_are_dropped_and_counted_never_truncated(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long = Problem("long", "What is 1 + 1? " * 200, "2")
    kept, dropped = prepare_prompts([PROBLEMS[0], long, PROBLEMS[1]], tok, uses_meta=True, n_solution=G,
                                    settings=SETTINGS)
    assert dropped == 1
    assert [p.group_id for p in kept] == [0, 2]  # group ids stay the batch indices
    assert all(len(p.meta_ids) <= 256 and len(p.solution_ids) <= 256 for p in kept)


def test_solution_instruction_reaches_both_prompts(tiny_model_dir):
    # issue 14 item 1: the rollout's solution prompt is problem + " " + instruction, and the meta prompt
    # shows that same text (as the paper's released code); "" keeps the bare problem (the toy)


    from transformers import AutoTokenizer

    from masa.algo.prompts import RELEASED_INSTRUCTION
    from masa.runner.rollout import chat_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    settings = dataclasses.replace(SETTINGS, solution_instruction=RELEASED_INSTRUCTION)
    [p], _ = prepare_prompts(PROBLEMS[:1], tok, uses_meta=True, n_solution=G, settings=settings)
    text = "What is 1 + 1? Let's think step by step and output the final answer within \\boxed{}."
    assert p.solution_ids == chat_ids(tok, text)
    assert p.meta_ids == chat_ids(tok, render_meta_prompt(text, n_solution=G, max_response_tokens=T))
    [bare], _ = prepare_prompts(PROBLEMS[:1], tok, uses_meta=False, n_solution=G, settings=SETTINGS)
    assert bare.solution_ids == chat_ids(tok, "What is 1 + 1?")


def test_load_batch_reads_verl_parquet_and_rejects_bad_rows(tmp_path):
    write_verl_parquet(PROBLEMS, tmp_path / "b.parquet")
    assert [p.problem for p in load_batch(tmp_path / "b.parquet")] == list(TAUGHT)
    with pytest.raises(ValueError, match="not problems"):
        load_batch([{"prompt": [{"role": "user", "content": "x"}], "reward_model": {}}])


# ------------------------------------------------------------------ real engine


def _solution_rows(rows, gid):
    return [r for r in rows if r["group_id"] == gid and r["path"] == "solution"]


@pytest.mark.slow
def test_grpo_rolls_out_g_solutions_per_prompt_reproducibly(engine):
    long = Problem("long", "What is 1 + 1? " * 200, "2")
    res = rollout(PROBLEMS + [long], engine, algorithm=_algo("grpo"), settings=SETTINGS, round_index=3, seed=1)
    s = res.stats
    assert (s.prompts, s.prompts_dropped_for_length, s.samples, s.meta_samples) == (5, 1, 4 * G, 0)
    assert all(r["path"] == "solution" and r["round"] == 3 and r["max_tokens"] == T for r in res.rows)
    assert all(len(r["logprobs"]) == len(r["response_token_ids"]) for r in res.rows)
    assert s.tokens == sum(len(r["response_token_ids"]) for r in res.rows) and s.tokens_per_s > 0
    again = rollout(PROBLEMS + [long], engine, algorithm=_algo("grpo"), settings=SETTINGS, round_index=3, seed=1)
    assert again.rows == res.rows  # seeds per (round, prompt, sample): reruns are identical
    other = rollout(PROBLEMS, engine, algorithm=_algo("grpo"), settings=SETTINGS, round_index=4, seed=1)
    assert [r["response_token_ids"] for r in other.rows] != [r["response_token_ids"] for r in res.rows]


@pytest.mark.slow
def test_masa_samples_both_paths_in_one_engine_call(engine):
    res = rollout(PROBLEMS, engine, algorithm=_algo("masa"), settings=SETTINGS, mae_history=[0.0])
    s = res.stats
    assert s.engine_calls == 1 and (s.meta_samples, s.solution_samples) == (4 * GM, 4 * G)
    assert s.gated_prompts == 0 and s.cutoff_samples == 0  # plain masa neither gates nor cuts off
    meta = [r for r in res.rows if r["path"] == "meta"]
    parsed = [r for r in meta if r["meta_parse_error"] is None]
    assert len(parsed) >= len(meta) // 2, [r["text"] for r in meta]
    for r in parsed:
        assert r["meta_pass_rate"] in (0, 2, 4) and r["meta_solution_length"] == TAUGHT[r["problem"]]
        assert r["meta_notions"] == ["arithmetic"]


@pytest.mark.slow
def test_meta_feedin_hint_reaches_the_solution_prompt_only(engine):
    # issue 14 item 8: with meta_feedin the meta path runs first and each prompt's solution prompt gets
    # "\n\n" + the hint of its first meta sample with notions or a length (the taught notions
    # ["arithmetic"] and length); meta rows, seeds and everything else are as without it
    from masa.algo.meta import parse_meta_fields
    from masa.algo.prompts import feedin_hint
    from masa.runner.rollout import chat_ids

    plain = rollout(PROBLEMS, engine, algorithm=_algo("masa"), settings=SETTINGS)
    fed = rollout(PROBLEMS, engine, algorithm=dataclasses.replace(_algo("masa"), meta_feedin=True), settings=SETTINGS)
    assert fed.stats.engine_calls == 2
    meta = [r for r in fed.rows if r["path"] == "meta"]
    plain_meta = [r for r in plain.rows if r["path"] == "meta"]
    # the meta path is untouched: the same rows and tokens; log-probs to float32 rounding, since alone in
    # its engine call it is batched differently than beside the solutions (vLLM CPU kernels)
    assert [{**r, "logprobs": None} for r in meta] == [{**r, "logprobs": None} for r in plain_meta]
    for a, b in zip(meta, plain_meta, strict=True):
        assert a["logprobs"] == pytest.approx(b["logprobs"], abs=1e-5)
    for p in PROBLEMS:
        first = next(f for r in meta if r["problem"] == p.problem
                     for f in [parse_meta_fields(r["text"], n_solution=G, max_response_tokens=T)]
                     if not hasattr(f, "reason"))
        hint = feedin_hint(first.notions, first.solution_length)
        assert hint == (" The problem could be solved using following math notions: ['arithmetic']. "
                        f" The solution length in token level should be {TAUGHT[p.problem]}.")
        want = chat_ids(engine.tokenizer, p.problem + "\n\n" + hint)
        sols = [r for r in fed.rows if r["path"] == "solution" and r["problem"] == p.problem]
        assert len(sols) == G and all(tuple(r["prompt_token_ids"]) == want for r in sols)
        base = [r for r in plain.rows if r["path"] == "solution" and r["problem"] == p.problem]
        assert all(tuple(r["prompt_token_ids"]) == chat_ids(engine.tokenizer, p.problem) for r in base)


def _expected_decision(rows, algorithm, mae_history, *, seed, round_index, gate_history=(), signal_history=()):
    """The pure gating/cutoff decision recomputed from the meta predictions stored in the shard."""
    meta = sorted((r for r in rows if r["path"] == "meta"), key=lambda r: (r["group_id"], r["sample_idx"]))
    B = len(meta) // GM
    valid = torch.tensor([r["meta_parse_error"] is None for r in meta]).view(B, GM)
    rate = torch.tensor([r["meta_pass_rate"] or 0 for r in meta]).view(B, GM)
    length = torch.tensor([r["meta_solution_length"] or 0 for r in meta]).view(B, GM)
    g = algorithm.gating
    low, high = g.bounds(G)
    skip, _, _ = gating_decision(rate, valid, mae_history, n_solution=G, low=low, high=high,
                                 min_rounds=g.min_rounds, window=g.window, mae_threshold=g.mae_threshold,
                                 precision_history=gate_history, min_precision=g.min_precision,
                                 signal_history=signal_history, max_signal_loss=g.max_signal_loss,
                                 explore_share=g.explore_share, generator=round_generator(seed, round_index))
    budget = cutoff_budget(length, valid, multiplier=2.0, min_tokens=4, max_tokens=T)
    return skip.tolist(), budget.tolist()


@pytest.mark.slow
@pytest.mark.parametrize("explore_share", [0.0, 0.5])
def test_efficient_gates_and_cuts_off_exactly_as_the_pure_decision(engine, explore_share):
    algo = _algo("masa-efficient", explore_share=explore_share)
    problems = PROBLEMS * 2  # 8 prompts: more medians, more decisions
    problems = [Problem(f"{p.prompt_id}-{i}", p.problem, p.answer) for i, p in enumerate(problems)]
    # an earlier round's MAE 0.1, 9 of its 10 would-be-gated prompts on the skipped side, and 1 of its 10
    # mixed groups among them (0.1 <= max_signal_loss 0.2): reliable
    res = rollout(problems, engine, algorithm=algo, settings=SETTINGS, round_index=2, seed=5, mae_history=[0.1],
                  gate_history=[(9, 10)], signal_history=[(1, 10, 10, 0)])
    assert res.stats.gating_active and res.stats.engine_calls in (1, 2)
    skip, budget = _expected_decision(res.rows, algo, [0.1], seed=5, round_index=2, gate_history=[(9, 10)],
                                      signal_history=[(1, 10, 10, 0)])
    assert res.skip == skip and res.budgets == budget
    if explore_share == 0.0:
        assert 0 < sum(skip) < len(skip), "the taught predictions must gate some prompts and keep others"
        assert any(b < T for b, s in zip(budget, skip, strict=True) if not s)
    for gid, (sk, b) in enumerate(zip(skip, budget, strict=True)):
        sol = _solution_rows(res.rows, gid)
        assert all(r["gated"] == sk and r["max_tokens"] == b for r in res.rows if r["group_id"] == gid)
        assert len(sol) == (0 if sk else G)
        for r in sol:
            n = len(r["response_token_ids"])
            assert n <= b
            # Stopped by the prompt's budget below the global max -> cutoff; never "length" then.
            if r["finish_reason"] != "stop":
                assert r["finish_reason"] == ("cutoff" if b < T else "length") and n == b
    assert res.stats.gated_prompts == sum(skip)
    assert res.stats.cutoff_samples == sum(r["finish_reason"] == "cutoff" for r in res.rows)


@pytest.mark.slow
def test_efficient_before_gating_is_reliable_only_cuts_off(engine):
    res = rollout(PROBLEMS, engine, algorithm=_algo("masa-efficient", min_rounds=2), settings=SETTINGS,
                  mae_history=[0.0])  # one round of history < min_rounds: gating stays off
    assert not res.stats.gating_active and res.stats.gated_prompts == 0
    assert res.stats.solution_samples == 4 * G and res.stats.cutoff_samples > 0


@pytest.mark.slow
def test_efficient_with_a_low_mae_but_an_imprecise_gate_only_cuts_off(engine):
    # MAE 0.1 passes the switch, but of the prompts the meta path would have skipped only 5 of 10 were on the
    # skipped side (0.5 < min_precision 0.8): gating stays off (a meta path predicting one value everywhere)
    res = rollout(PROBLEMS, engine, algorithm=_algo("masa-efficient"), settings=SETTINGS, mae_history=[0.1],
                  gate_history=[(5, 10)], signal_history=[(1, 10, 10, 0)])
    assert not res.stats.gating_active and res.stats.gated_prompts == 0


@pytest.mark.slow
def test_efficient_with_a_precise_gate_that_would_drop_the_signal_only_cuts_off(engine):
    # MAE and precision pass (9 of 10), but 4 of the round's 5 mixed groups were among the would-be-skipped
    # (0.8 > max_signal_loss 0.2): gating stays off
    res = rollout(PROBLEMS, engine, algorithm=_algo("masa-efficient"), settings=SETTINGS, mae_history=[0.1],
                  gate_history=[(9, 10)], signal_history=[(4, 5, 10, 0)])
    assert not res.stats.gating_active and res.stats.gated_prompts == 0


@pytest.mark.slow
def test_step_writes_the_shard_and_stats(engine, meta_model_dir, tmp_path):
    write_verl_parquet(PROBLEMS, tmp_path / "batch.parquet")
    stats = run_rollout_step(tmp_path / "batch.parquet", str(meta_model_dir), tmp_path / "out",
                             algorithm=_algo("masa-efficient"), settings=SETTINGS, round_index=1,
                             mae_history=[0.1], engine=engine)
    table = pq.read_table(tmp_path / "out" / "rollouts.parquet")
    assert table.schema.equals(shard_schema())
    assert table.num_rows == stats.samples == stats.meta_samples + stats.solution_samples
    saved = json.loads((tmp_path / "out" / "rollout_stats.json").read_text())
    assert saved["samples"] == stats.samples and saved["gated_prompts"] == stats.gated_prompts


@pytest.mark.slow
def test_step_with_transformers_backend_starts_its_own_engine(meta_model_dir, tmp_path):
    stats = run_rollout_step(PROBLEMS[:2], str(meta_model_dir), tmp_path, algorithm=_algo("grpo"),
                             settings=SamplingSettings(max_response_tokens=8, max_prompt_tokens=256),
                             backend="transformers")
    assert stats.samples == 2 * G and stats.engine_startup_s > 0
    assert pq.read_table(tmp_path / "rollouts.parquet").num_rows == 2 * G


def test_step_fails_naming_a_missing_model_before_generating(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        run_rollout_step(PROBLEMS, str(tmp_path / "nope"), tmp_path / "out", algorithm=_algo("grpo"),
                         settings=SETTINGS)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_rollout_writes_shard(meta_model_dir, tmp_path, capsys):
    from masa.cli import main

    write_verl_parquet(PROBLEMS[:2], tmp_path / "batch.parquet")
    rc = main(["rollout", "--prompts", str(tmp_path / "batch.parquet"), "--model", str(meta_model_dir),
               "--out", str(tmp_path / "out"), "--round", "1", "--mae-history", "0.1,0.1",
               "--set", "rollout.backend=transformers", "--set", "rollout.max_response_tokens=16",
               "--set", "algorithm.n_solution=2", "--set", "algorithm.n_meta=2"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == pq.read_table(tmp_path / "out" / "rollouts.parquet").num_rows > 0
    assert main(["rollout", "--prompts", str(tmp_path / "missing.parquet"), "--model", str(meta_model_dir),
                 "--out", str(tmp_path / "o2")]) == 2
    # a GRPO round as the pipeline's grpo branch runs it: solution samples only
    assert main(["rollout", "--prompts", str(tmp_path / "batch.parquet"), "--model", str(meta_model_dir),
                 "--out", str(tmp_path / "grpo"), "--branch", "grpo", "--set", "rollout.backend=transformers",
                 "--set", "rollout.max_response_tokens=16", "--set", "algorithm.n_solution=2"]) == 0
    paths = set(pq.read_table(tmp_path / "grpo" / "rollouts.parquet").column("path").to_pylist())
    assert paths == {"solution"}


def test_gate_evidence_from_the_score_steps_history():
    from masa.steps.rollout import gate_evidence

    history = [
        # a GRPO round: no meta figures, nothing
        {"round": 0, "meta_pass_rate_mae_median": None, "meta_gate_hits": None, "meta_gate_candidates": None,
         "meta_gate_mixed": None, "meta_mixed": None, "gated_prompts": 0},
        # scored before the mixed counts existed (a resumed older run): MAE and precision, no signal evidence
        {"round": 1, "meta_pass_rate_mae_median": 0.3, "meta_gate_hits": 5, "meta_gate_candidates": 9,
         "gated_prompts": 0},
        # gating on: 10 explored candidates of 50 would-be-skipped, 40 skipped
        {"round": 2, "meta_pass_rate_mae_median": 0.2, "meta_gate_hits": 8, "meta_gate_candidates": 10,
         "meta_gate_mixed": 2, "meta_mixed": 9, "gated_prompts": 40},
    ]
    assert gate_evidence(history) == ([0.3, 0.2], [(5, 9), (8, 10)], [(2, 9, 10, 40)])


@pytest.mark.slow
def test_cutoff_waits_for_its_switch(engine):
    # max_cut_passing 0.05 over a window of 2: one round of evidence is not enough, every budget is the cap
    algo = dataclasses.replace(_algo("masa-efficient", min_rounds=5),
                               cutoff=CutoffConfig(multiplier=2.0, min_tokens=4, max_cut_passing=0.05, window=2))
    off = rollout(PROBLEMS, engine, algorithm=algo, settings=SETTINGS, cut_history=[(0, 10)])
    assert not off.stats.cutoff_active and off.budgets == [T] * len(PROBLEMS) and off.stats.cutoff_samples == 0
    # two rounds, (1 + 0) / (10 + 30) = 0.025 <= 0.05: the budgets are the pure rule's, as without a switch
    on = rollout(PROBLEMS, engine, algorithm=algo, settings=SETTINGS, cut_history=[(1, 10), (0, 30)])
    _, budget = _expected_decision(on.rows, algo, [], seed=0, round_index=0)
    assert on.stats.cutoff_active and on.budgets == budget and on.stats.cutoff_samples > 0
    # (3 + 0) / 40 = 0.075 > 0.05: off again
    assert not rollout(PROBLEMS, engine, algorithm=algo, settings=SETTINGS,
                       cut_history=[(3, 10), (0, 30)]).stats.cutoff_active


def test_cut_evidence_from_the_score_steps_history():
    from masa.steps.rollout import cut_evidence

    history = [{"round": 0, "cutoff_would_cut": None, "cutoff_passing": None},  # GRPO: nothing
               {"round": 1, "meta_gate_hits": 5},  # scored before the count existed: nothing
               {"round": 2, "cutoff_would_cut": 3, "cutoff_passing": 40}]
    assert cut_evidence(history) == [(3, 40)]


def test_rollout_cli_reads_the_gating_evidence():
    from masa.commands.rollout import _cuts, _pairs, _quads

    assert _cuts("3/40,0/12") == [(3, 40), (0, 12)]

    assert _pairs("9/10, 5/9") == [(9, 10), (5, 9)]
    assert _quads("1/10/10/0,2/9/10/40") == [(1, 10, 10, 0), (2, 9, 10, 40)] and _quads("") == []
    with pytest.raises(SystemExit, match="--signal-history must be comma-separated MIXED_CANDIDATES/MIXED/"):
        _quads("1/10/10")  # three counts, not four: one line naming the flag, no traceback
