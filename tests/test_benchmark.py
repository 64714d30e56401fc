"""The benchmark step on real files: AIME 2025 from ../shared/data and a verl parquet written here,
with the real vLLM CPU engine on a tiny model; pass@k and meta-awareness figures are well-formed."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from masa.runner.evaluate import EvalSettings, ProblemOutcome, benchmark_name, run_benchmarks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
AIME = SHARED / "aime2025" / "test.parquet"


def _verl_file(path: Path) -> Path:
    rows = [{"data_source": "tests", "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
             "ability": "math", "reward_model": {"style": "rule", "ground_truth": {"target": str(a + b)}},
             "extra_info": {"index": i, "split": "test"}} for i, (a, b) in enumerate([(1, 2), (20, 22), (7, 8)])]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_benchmark_names():
    assert benchmark_name("../shared/data/aime2025/test.parquet") == "aime2025"
    assert benchmark_name("/x/mine.jsonl") == "mine"
    assert benchmark_name("HuggingFaceH4/MATH-500") == "MATH-500"


@pytest.mark.slow
def test_benchmark_runs_on_aime_and_a_new_verl_file(tiny_model_dir, tmp_path):
    if not AIME.is_file():
        pytest.skip(f"{AIME} absent (shared data not laid out beside the checkout)")
    (tmp_path / "mine").mkdir()
    mine = _verl_file(tmp_path / "mine" / "test.parquet")
    s = EvalSettings(k=2, temperature=1.0, max_tokens=16, max_problems=5, n_solution=4, max_prompt_tokens=512)
    result = run_benchmarks(str(tiny_model_dir), [str(AIME), str(mine)], s, backend="vllm")
    assert set(result["benchmarks"]) == {"aime2025", "mine"}
    for b in result["benchmarks"].values():
        assert b["k"] == 2 and 0 < b["n_problems"] <= 5
        assert 0 <= b["accuracy"] <= 1 and set(b["pass_at_k"]) == {"1", "2"}
        assert b["pass_at_k"]["1"] == pytest.approx(b["accuracy"])  # pass@1 is avg@k
        assert b["pass_at_k"]["2"] >= b["pass_at_k"]["1"]
        assert set(b["meta"]) >= {"pass_rate_mae", "pass_rate_mae_stderr", "spearman", "length_in_range", "notion",
                                  "parse_rate"}
        # standard error over problems (masa.algo.evaluation; its math is tested there): at most the
        # 0.5 / sqrt(P - 1) of a split of all-right and all-wrong problems
        assert 0 <= b["accuracy_stderr"] <= 0.5 / (b["n_problems"] - 1) ** 0.5 + 1e-6
        assert b["tokens"] > 0 and b["samples_per_s"] > 0
    assert result["benchmarks"]["mine"]["n_problems"] == 3


@pytest.mark.slow
def test_benchmark_cli_writes_json(tiny_model_dir, tmp_path):
    data = _verl_file(tmp_path / "b.parquet")
    r = subprocess.run([sys.executable, "-m", "masa.cli", "benchmark", "--model", str(tiny_model_dir),
                        "--data", str(data), "--k", "2", "--max-tokens", "8", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "out" / "benchmark.json").read_text())
    assert out["benchmarks"]["b"]["n_problems"] == 3 and out["model"] == str(tiny_model_dir)


@pytest.mark.slow
def test_fewer_meta_samples_than_solutions(tiny_model_dir, tmp_path):
    # benchmark.meta_k = 1 with k = 3: on the real vLLM CPU engine each of the 3 problems gets 3 judged
    # solutions and 1 meta sample, so the parse rate's denominator is 3 (problems x 1), and the solution
    # samples are the ones that meta_k = k draws (each path has its own seed per problem).
    import dataclasses

    from masa.engines import EngineConfig, make_engine
    from masa.runner.evaluate import figures, load_benchmark, sample_outcomes

    problems, _ = load_benchmark(str(_verl_file(tmp_path / "b.parquet")), EvalSettings())
    s = EvalSettings(k=3, meta_k=1, temperature=1.0, max_tokens=8, n_solution=4, max_prompt_tokens=512)
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="vllm", max_model_len=520))
    try:
        fewer = sample_outcomes(engine, problems, s).outcomes
        full = sample_outcomes(engine, problems, dataclasses.replace(s, meta_k=None)).outcomes
    finally:
        engine.close()
    assert [len(o.correct) for o in fewer] == [3, 3, 3] and [len(o.meta) for o in fewer] == [1, 1, 1]
    assert [len(o.meta) for o in full] == [3, 3, 3]
    assert [o.lengths for o in fewer] == [o.lengths for o in full]
    f = figures(fewer, s, meta=True)
    assert f["k"] == 3 and f["meta_k"] == 1 and f["meta"]["parse_rate"] * 3 == pytest.approx(round(f["meta"]["parse_rate"] * 3))


def test_benchmark_cli_bad_input_is_named(tmp_path):
    r = subprocess.run([sys.executable, "-m", "masa.cli", "benchmark", "--model", str(tmp_path / "none"),
                        "--data", str(tmp_path / "none.parquet")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "none" in r.stderr


def test_meta_awareness_hand_values():
    # One problem, k = 4 solutions of which 2 are correct (observed 0.5), G = 8, three meta samples
    # predicting 2, 4 and 7 of 8 (0.25, 0.5, 0.875) and one unparsable.
    #   per-sample MAE = (|0.25-0.5| + |0.5-0.5| + |0.875-0.5|) / 3 = (0.25 + 0 + 0.375) / 3 = 0.208333
    #   median of (2, 4, 7) = 4 -> 0.5, so the MAE of the median is 0; parse rate 3/4.
    from types import SimpleNamespace

    from masa.algo.meta import format_meta_completion
    from masa.data.records import Problem
    from masa.runner.evaluate import _meta_awareness, _meta_outcomes

    def meta(k):
        return SimpleNamespace(text=format_meta_completion("An addition.", notions=["addition"], pass_rate=k,
                                                           solution_length=10))

    s = EvalSettings(k=4, n_solution=8, max_tokens=64)
    p = Problem(prompt_id="p", problem="What is 1 + 2?", answer="3")
    sols = [SimpleNamespace(text="addition \\boxed{3}")] * 4
    correct = (True, False, True, False)
    predictions = _meta_outcomes(p, sols, [meta(2), meta(4), meta(7), SimpleNamespace(text="no json")], correct, s)
    assert [m.pass_rate if m else None for m in predictions] == [2, 4, 7, None]
    o = ProblemOutcome("p", correct=correct, lengths=(10, 12, 11, 9), meta=predictions, tokens=0)
    figures, rows = _meta_awareness([o], s)
    assert figures["pass_rate_mae"] == pytest.approx(0.625 / 3)
    assert figures["pass_rate_mae_median"] == 0.0
    # one problem: the constant is its own observed rate, so the constant's MAE is 0
    assert figures["pass_rate_mae_constant"] == 0.0
    assert figures["parse_rate"] == 0.75
    assert rows == [{"prompt_id": "p", "observed": 0.5, "predicted": pytest.approx(13 / 24), "median": 0.5}]
    # length 10 lies in the correct samples' range [10, 11] for all three parsed predictions
    assert figures["length_in_range"] == 1.0


def test_constant_mae_hand_values():
    # observed rates 0, 0, 0, 0.5, 1 (a mostly failed benchmark): median 0, so the constant's MAE is
    # (0 + 0 + 0 + 0.5 + 1) / 5 = 0.3, the benchmark's accuracy; a meta path at 0.35 is worse than
    # guessing 0 for every problem although 0.35 may be well under half an untrained path's MAE.
    # Even count: 0, 0.5, 0.5, 1 -> median 0.5, MAE (0.5 + 0 + 0 + 0.5) / 4 = 0.25
    from masa.runner.evaluate import constant_mae

    assert constant_mae([0.0, 0.0, 0.0, 0.5, 1.0]) == pytest.approx(0.3)
    assert constant_mae([0.0, 0.5, 0.5, 1.0]) == pytest.approx(0.25)
    assert constant_mae([]) is None


def test_constant_mae_weighs_problems_by_their_parsed_predictions():
    # As pass_rate_mae does: problem a (observed 0) has two parsed predictions, problem b (observed 1)
    # one. Per prediction the observed rates are 0, 0, 1: median 0, MAE (0 + 0 + 1) / 3 = 1/3. Per
    # problem (0, 1) it would be median 0.5, MAE 0.5.
    from masa.runner.evaluate import MetaOutcome, _meta_awareness

    def pred(k):
        return MetaOutcome(pass_rate=k, solution_length=10, notion=1.0)

    s = EvalSettings(k=2, n_solution=2, max_tokens=64)
    a = ProblemOutcome("a", correct=(False, False), lengths=(10, 10), meta=(pred(0), pred(1)), tokens=0)
    b = ProblemOutcome("b", correct=(True, True), lengths=(10, 10), meta=(pred(2), None), tokens=0)
    figures, _ = _meta_awareness([a, b], s)
    assert figures["pass_rate_mae_constant"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ issue 13: benchmark shards


@pytest.mark.slow
def test_benchmark_sharded_over_problems_gives_the_unsharded_figures(tiny_model_dir, tmp_path):
    # The tiny model taught to answer 13 problems right or wrong (two answers each, so samples vary)
    # and their meta prompts with pass rates 0, 2 or 4 of 4: every figure, meta ones included, has
    # values. On the real vLLM CPU engine the benchmark runs whole, as 3 shards (slices of 5, 4, 4
    # problems) merged, and as 20 shards (most empty). A problem's samples depend only on its own
    # seed and the merge takes every figure over the problems in order, so all that is measured is
    # equal; only the seconds differ.
    from tiny_model import overfit_tiny_model

    from masa.algo.meta import render_meta_prompt
    from masa.engines import EngineConfig, make_engine
    from masa.runner.eval_shards import merge_shards, sample_shard

    s = EvalSettings(k=4, temperature=1.0, max_tokens=48, n_solution=4, max_prompt_tokens=512)
    sums = [(a, 2 * a + 1) for a in range(1, 14)]
    rows = [{"data_source": "tests", "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": {"target": str(a + b)}},
             "extra_info": {"index": i, "split": "test"}} for i, (a, b) in enumerate(sums)]
    (tmp_path / "sums").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "sums" / "test.parquet")
    pairs = [(f"What is {a} + {b}?", f"\\boxed{{{a + b + wrong}}}") for a, b in sums for wrong in (0, a % 3)]
    pairs += [(render_meta_prompt(f"What is {a} + {b}?", n_solution=4, max_response_tokens=48),
               json.dumps({"math_notion": ["addition"], "pass_rate": k, "solution_length": 6}))
              for a, b in sums for k in (0, 2, 4)]
    model = overfit_tiny_model(tiny_model_dir, tmp_path / "taught", pairs, steps=150, target_loss=0.05)
    sources, names = [str(tmp_path / "sums" / "test.parquet")], ["sums"]
    engine = make_engine(EngineConfig(model=str(model), backend="vllm", dtype="float32", max_model_len=512))
    try:
        whole = run_benchmarks("", sources, s, engine=engine, names=names)
        parts = {n: [json.loads(json.dumps(sample_shard(engine, sources, names, s, shard=k, shards=n)))
                     for k in reversed(range(n))] for n in (3, 20)}  # through JSON, as the merge step reads them
    finally:
        engine.close()

    def measured(r):
        return {k: v for k, v in r["benchmarks"]["sums"].items() if not k.endswith("_s") and k != "shards"}

    m = measured(whole)
    assert m["n_problems"] == 13 and 0 < m["accuracy"] < 1 and m["meta"]["parse_rate"] > 0.5, m
    assert [len(p["benchmarks"]["sums"]["outcomes"]) for p in sorted(parts[3], key=lambda p: p["shard"])] == [5, 4, 4]
    for n, got in parts.items():
        merged = merge_shards(got, s)
        assert measured(merged) == m, n
        assert merged["benchmarks"]["sums"]["shards"] == n
    with pytest.raises(ValueError, match=r"expected 1 and 0\.\.2 of 3"):
        merge_shards(parts[3][:2], s)  # a shard missing is named, never merged into smaller figures


def test_merged_shards_where_no_problem_fits_fail_in_one_line():
    from masa.data.records import DataError
    from masa.runner.eval_shards import SHARD_FORMAT, merge_shards

    def part(k):
        return {"format": SHARD_FORMAT, "shard": k, "shards": 2, "wall_s": 1.0, "benchmarks": {"b": {
            "outcomes": [], "n_skipped": 2, "skipped_reason": "prompt over 48 tokens", "longest_prompt": 60 + k,
            "context": 64, "generation_s": 0.0, "wall_s": 1.0, "source": "b.parquet", "rejected_rows": 0}}}

    with pytest.raises(DataError) as e:
        merge_shards([part(0), part(1)], EvalSettings(k=2))
    assert str(e.value) == ("no benchmark problem fits: all 4 have a prompt over 48 tokens; the longest prompt "
                            "has 61 tokens, the model's context is 64")


# ------------------------------------------------------------------ issue 14: instruction, meta budget, context


def test_benchmark_prompts_pin_the_instruction_and_the_training_meta_budget(tiny_model_dir):
    # the solution prompt is the problem + " " + the released sentence (akatigre/MASA-RL data_preprocess.py);
    # the meta prompt shows that same text and states the training budget (8192), not the benchmark's
    from transformers import AutoTokenizer

    from masa.algo.meta import render_meta_prompt
    from masa.algo.prompts import RELEASED_INSTRUCTION
    from masa.data.records import Problem
    from masa.runner.evaluate import _prompts
    from masa.runner.rollout import chat_ids

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    p = Problem("p", "What is 1 + 2?", "3")
    s = EvalSettings(n_solution=8, max_tokens=16384, meta_max_tokens=8192, solution_instruction=RELEASED_INSTRUCTION)
    sol, meta = _prompts(tok, p, s)
    text = "What is 1 + 2? Let's think step by step and output the final answer within \\boxed{}."
    assert sol == chat_ids(tok, text)
    assert meta == chat_ids(tok, render_meta_prompt(text, n_solution=8, max_response_tokens=8192))
    assert "integer 1 to 8192" in tok.decode(meta) and "16384" not in tok.decode(meta)
    # the toy's format: no instruction, the bare problem
    assert _prompts(tok, p, EvalSettings())[0] == chat_ids(tok, "What is 1 + 2?")


def test_prompt_limit_is_the_context_less_the_minimum_response():
    from masa.runner.evaluate import prompt_limit

    s = EvalSettings(max_prompt_tokens=1024, min_response_tokens=16)
    assert prompt_limit(None, s) == (1024, "prompt over max_prompt_tokens (1024)")
    assert prompt_limit(4096, s)[0] == 1024
    # the toy's 512-token context: 512 - 16 = 496 < 1024
    assert prompt_limit(512, s) == (496, "prompt over 496 tokens (the model's context of 512 less 16 response tokens)")


def test_problems_over_the_context_are_skipped_and_counted_not_fatal(tiny_model_dir):
    # A 64-token context: the short problem fits with >= 16 response tokens, the long one cannot; only
    # a benchmark where nothing fits fails, in one line naming the context and the longest prompt.
    from masa.data.records import DataError, Problem
    from masa.engines import EngineConfig, make_engine
    from masa.runner.evaluate import evaluate

    short, long = Problem("s", "1 + 2?", "3"), Problem("l", "What is 1 + 1? " * 40, "2")
    engine = make_engine(EngineConfig(model=str(tiny_model_dir), backend="transformers", max_model_len=64))
    try:
        s = EvalSettings(k=1, max_tokens=32, n_solution=4, max_prompt_tokens=1024, min_response_tokens=16)
        r = evaluate(engine, [short, long], s, meta=False)
        assert (r["n_problems"], r["n_skipped"]) == (1, 1)
        assert r["skipped_reason"] == "prompt over 48 tokens (the model's context of 64 less 16 response tokens)"
        with pytest.raises(DataError) as e:
            evaluate(engine, [long], s, meta=False)
    finally:
        engine.close()
    msg = str(e.value)
    assert "\n" not in msg and "context is 64" in msg and "longest prompt has" in msg


def test_benchmark_cli_with_a_preset_uses_the_benchmark_steps_settings(tiny_model_dir, tmp_path, capsys):
    # `masa benchmark --preset` is the benchmark step's twin: its sampling comes from
    # runner.settings.benchmark_eval_settings (benchmark.k, benchmark.max_tokens, the run's seed ...)
    from masa.cli import main

    data = _verl_file(tmp_path / "b.parquet")
    assert main(["benchmark", "--model", str(tiny_model_dir), "--data", str(data), "--preset", "smoke",
                 "--set", "rollout.backend=transformers", "--set", "benchmark.k=2", "--set", "benchmark.max_tokens=8",
                 "--k", "5"]) == 0
    out = json.loads(capsys.readouterr().out)["benchmarks"]["b"]
    assert out["k"] == 2 and out["n_problems"] == 3  # --k is not used with --preset
    assert main(["benchmark", "--model", str(tiny_model_dir), "--data", str(data), "--set", "benchmark.k=2"]) == 2


def test_the_rounds_check_samples_heldout_k_per_problem_and_the_benchmark_keeps_its_k():
    # the toy's check: all 700 benchmark problems x 1 sample (standard error ~1.75 points) instead of
    # 64 x 8 (~4.5); the benchmark itself stays at k = 8. Unset, the check samples the benchmark's k.
    from masa.config import ConfigError, load_config
    from masa.runner.settings import benchmark_eval_settings, heldout_eval_settings

    toy = load_config("toy")
    assert (toy.data.heldout_size, toy.data.heldout_k, toy.benchmark.max_problems) == (700, 1, 700)
    assert heldout_eval_settings(toy).k == 1 and benchmark_eval_settings(toy).k == 8
    smoke = load_config("smoke", ["benchmark.k=3"])
    assert smoke.data.heldout_k is None and heldout_eval_settings(smoke).k == benchmark_eval_settings(smoke).k == 3
    with pytest.raises(ConfigError, match=r"data.heldout_k: must be >= 1 or null \(= benchmark.k\)"):
        load_config("toy", ["data.heldout_k=0"])


def test_the_rounds_check_runs_every_heldout_every_rounds():
    # data.heldout_every = N checks rounds 0, N, 2N, ... (verl's test_freq); the final checkpoint is
    # always measured by the benchmark. The toy preset checks every 3rd of its 18 rounds: 6 checks a branch
    from masa.config import ConfigError, load_config

    toy = load_config("toy")
    assert toy.data.heldout_every == 3
    assert [r for r in range(toy.rounds) if toy.data.checks(r)] == [0, 3, 6, 9, 12, 15]
    smoke = load_config("smoke")
    assert all(smoke.data.checks(r) for r in range(5))  # the default: every round
    assert not load_config("smoke", ["data.heldout=null"]).data.checks(0)
    with pytest.raises(ConfigError, match=r"data.heldout_every: must be >= 1"):
        load_config("toy", ["data.heldout_every=0"])
