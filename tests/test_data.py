"""masa.data: loading (verl parquet, JSONL/JSON, HF id, s3://), row validation by reason, and the filters
(exact / near duplicates, benchmark overlap, length) on hand-built cases and on the real MATH files."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from masa.algo.verifier.extract import last_boxed
from masa.data.filter import (
    answer_key,
    drop_benchmark_overlap,
    drop_exact_duplicates,
    drop_long_prompts,
    drop_near_duplicates,
    jaccard,
    ngrams,
    overlap_share,
    words,
)
from masa.data.records import (
    DataError,
    Problem,
    check_sources,
    count_reasons,
    load_problems,
    rows_to_problems,
    write_rejections,
    write_verl_parquet,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def verl_row(problem, target, *, solution=None, role="user"):
    gt = {"question": problem, "target": target, "solution": solution}
    return {"data_source": "hand", "prompt": [{"role": role, "content": problem}], "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": gt}, "extra_info": {"index": 0, "split": "train"}}


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# ------------------------------------------------------------------ verl parquet


def test_verl_parquet_each_reason_counted(tmp_path):
    rows = [
        verl_row("What is 1+1?", "2"),
        verl_row("What is 2+2?", ""),                                  # empty target, no solution
        verl_row("What is 3+3?", None),                                # absent target
        verl_row("Day?", "", solution="so it is $\\boxed{\\mbox{Saturday}}$."),  # recovered from solution
        verl_row("System only", "1", role="system"),                   # no user turn
        verl_row("   ", "1"),                                          # blank problem
        verl_row("Sum?", "", solution="so $\\boxed{}$"),               # solution's box is empty too
    ]
    rows.append({**verl_row("x", "1"), "prompt": []})                  # empty message list
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    kept, rejected = load_problems(str(path))

    assert [(p.problem, p.answer, p.row) for p in kept] == [("What is 1+1?", "2", 0), ("Day?", "\\mbox{Saturday}", 3)]
    assert [(r.index, r.reason) for r in rejected] == [
        (1, "empty_answer"), (2, "missing_answer"), (4, "bad_prompt"), (5, "empty_problem"),
        (6, "empty_answer"), (7, "bad_prompt")]
    assert "role 'user'" in rejected[2].detail


def test_write_verl_parquet_round_trip(tmp_path):
    kept, _ = rows_to_problems([verl_row("Find $x$ if $2x=4$.", "2", solution="$\\boxed{2}$"),
                                {"problem": "Add 1 and 2.", "answer": 3}], source="hand")
    write_verl_parquet(kept, tmp_path / "out.parquet")
    again, rejected = load_problems(str(tmp_path / "out.parquet"))
    assert rejected == []
    assert [p.prompt_id for p in again] == [p.prompt_id for p in kept]
    assert pq.read_table(tmp_path / "out.parquet").column("prompt_id").to_pylist() == [p.prompt_id for p in kept]


# ------------------------------------------------------------------ JSONL / JSON


def test_jsonl_each_reason_counted(tmp_path):
    lines = [
        {"id": "a", "problem": "What is 1+1?", "answer": "2"},                       # 0 kept
        '{"problem": "broken", "answer": ',                                          # 1 bad_json
        {"problem": "What is 2+2?"},                                                 # 2 missing_answer
        {"problem": "What is 3+3?", "answer": "  "},                                 # 3 empty_answer
        {"problem": 42, "answer": "1"},                                              # 4 bad_prompt (non-text)
        {"prompt": [{"role": "user", "content": "Q?"}], "reward_model": {"ground_truth": ["1", "2"]}},  # 5 bad_answer
        {"prompt": [{"role": "user", "content": "Q?"}], "reward_model": "1"},       # 6 bad_answer (nesting)
        {"prompt": [["user", "Q?"]], "reward_model": {"ground_truth": "1"}},        # 7 bad_prompt (nesting)
        {"id": "a", "problem": "What is 5+5?", "answer": "10"},                      # 8 duplicate_id
        {"id": "b", "problem": "What is 6+6?", "answer": 12},                        # 9 kept, int answer
        {"id": "b", "problem": "What is 6+6?", "answer": "12"},                      # 10 same id+content: kept
        '{"problem": "What is 0/0?", "answer": NaN}',                                # 11 bad_answer
        [1, 2, 3],                                                                   # 12 bad_row
        {"question": "Half of 6?", "target": 3.0},                                   # 13 kept, "3"
        {"problem": "What is 7+7?", "answer": True},                                 # 14 bad_answer
        {"text": "no problem field", "answer": "1"},                                 # 15 missing_problem
    ]
    kept, rejected = load_problems(str(write_jsonl(tmp_path / "d.jsonl", lines)))

    assert [(p.row, p.answer) for p in kept] == [(0, "2"), (9, "12"), (10, "12"), (13, "3")]
    assert {r.index: r.reason for r in rejected} == {
        1: "bad_json", 2: "missing_answer", 3: "empty_answer", 4: "bad_prompt", 5: "bad_answer", 6: "bad_answer",
        7: "bad_prompt", 8: "duplicate_id", 11: "bad_answer", 12: "bad_row", 14: "bad_answer",
        15: "missing_problem"}
    assert count_reasons(rejected) == {"bad_answer": 4, "bad_json": 1, "bad_prompt": 2, "bad_row": 1,
                                       "duplicate_id": 1, "empty_answer": 1, "missing_answer": 1,
                                       "missing_problem": 1}
    detail = {r.index: r.detail for r in rejected}
    assert "line 2" in detail[1]
    assert "ground_truth is list" in detail[5] and "reward_model is str" in detail[6]
    assert "id 'a' is already row 0" in detail[8] and "nan" in detail[11]
    # the same id with the same content is an exact duplicate, counted by the duplicate filter
    assert [r.index for r in drop_exact_duplicates(kept)[1]] == [10]


def test_write_rejections_lists_every_dropped_row(tmp_path):
    kept, rejected = rows_to_problems([{"problem": "a", "answer": "1"}, {"problem": "b"}, {"problem": "a", "answer": "1"}],
                                      source="x")
    out = tmp_path / "dropped.jsonl"
    assert write_rejections(rejected, out, stage="load") == 1
    assert write_rejections(drop_exact_duplicates(kept)[1], out, stage="dedup") == 1
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"row": 1, "reason": "missing_answer", "detail": rejected[0].detail, "prompt_id": "", "stage": "load"},
        {"row": 2, "reason": "duplicate", "detail": f"same text as row 0 ({kept[0].prompt_id})",
         "prompt_id": kept[1].prompt_id, "stage": "dedup"}]


def test_json_array_file_and_column_mapping(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps([{"q": "What is 1+1?", "a": "2", "key": 7},
                                                 {"q": "What is 2+2?", "a": "4", "key": 7}]))
    kept, rejected = load_problems(str(tmp_path / "d.json"), mapping={"problem": "q", "answer": "a", "id": "key"})
    assert [p.answer for p in kept] == ["2"] and [r.reason for r in rejected] == ["duplicate_id"]
    with pytest.raises(DataError, match=r"unknown keys \['question'\]"):
        rows_to_problems([], source="x", mapping={"question": "q"})


def test_huge_and_unencodable_rows(tmp_path):
    rows = [{"problem": "x" * 200, "answer": "1"}, {"problem": "bad \ud800 surrogate", "answer": "1"},
            {"problem": "ok", "answer": "1", "solution": "y" * 200}, {"problem": "big", "answer": 10**1200},
            {"problem": "inf", "answer": math.inf}]
    kept, rejected = rows_to_problems(rows, source="hand", max_chars=100)
    assert kept == []
    assert [(r.reason, r.detail) for r in rejected[:3]] == [
        ("too_long", "problem has 200 characters > 100"),
        ("bad_text", "problem is not valid Unicode text (surrogates not allowed at 4)"),
        ("too_long", "solution has 200 characters > 100")]
    assert [r.reason for r in rejected[3:]] == ["bad_answer", "bad_answer"]


def test_last_boxed():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert last_boxed("\\fbox{x}") == "x"
    assert last_boxed("\\boxed{\\frac{1}{2}") is None  # unbalanced: no truncated answer
    assert last_boxed("no box") is None


# ------------------------------------------------------------------ sources that cannot be read


def test_unreadable_sources_name_the_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="data file not found: missing.parquet"):
        load_problems("missing.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read parquet file corrupt.parquet"):
        load_problems("corrupt.parquet")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported data file data.csv"):
        load_problems("data.csv")
    (tmp_path / "bad.json").write_text("[{\"problem\": ")
    with pytest.raises(DataError, match="bad.json: not a JSON array"):
        load_problems("bad.json")
    with pytest.raises(DataError, match="data source not found: a/b/c"):
        load_problems("a/b/c")
    with pytest.raises(DataError, match="expected s3://bucket/"):
        load_problems("s3://bucket-only")


def test_check_sources_reports_every_key_before_reading(tmp_path):
    good = write_jsonl(tmp_path / "ok.jsonl", [])
    problems = check_sources({"data.train": str(good), "data.heldout": str(tmp_path / "absent.parquet"),
                              "benchmark.datasets[0]": "org/name", "benchmark.datasets[1]": "s3://b/dir/",
                              "benchmark.datasets[2]": ""})
    assert problems == [f"data.heldout: data file not found: {tmp_path}/absent.parquet",
                        "benchmark.datasets[1]: data URI s3://b/dir/: expected s3://bucket/[prefix/]file with one "
                        "of .parquet, .jsonl, .json",
                        "benchmark.datasets[2]: invalid data source '': expected a file path, s3:// URI or HF "
                        "dataset id"]


def test_hf_id_offline_names_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing loads offline
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"'no-such-org/no-such-math'.*HF_HUB_OFFLINE=1"):
        load_problems("no-such-org/no-such-math")


@pytest.mark.slow
def test_s3_source(s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("MASA_CACHE_DIR", str(tmp_path / "cache"))
    bucket = s3_server.make_bucket("masa-data")
    prefix = f"sets-{uuid.uuid4().hex[:8]}"
    local = write_jsonl(tmp_path / "train.jsonl", [{"problem": "What is 1+1?", "answer": "2"}, {"problem": "?"}])
    write_verl_parquet([Problem("id", "What is 2+2?", "4")], tmp_path / "test.parquet")
    client = s3_server.client()
    for f in (local, tmp_path / "test.parquet"):
        client.upload_file(str(f), "masa-data", f"{prefix}/{f.name}")

    kept, rejected = load_problems(f"{bucket}/{prefix}/train.jsonl")
    assert [p.answer for p in kept] == ["2"] and [r.reason for r in rejected] == ["missing_answer"]
    assert [p.answer for p in load_problems(f"{bucket}/{prefix}/test.parquet")[0]] == ["4"]
    with pytest.raises(DataError, match=f"cannot fetch data {bucket}/{prefix}/absent.jsonl"):
        load_problems(f"{bucket}/{prefix}/absent.jsonl")
    with pytest.raises(DataError, match="cannot fetch data s3://no-such-bucket-x1/train.jsonl"):
        load_problems("s3://no-such-bucket-x1/train.jsonl")


# ------------------------------------------------------------------ filters, hand cases


def prob(text: str, answer: str = "1", row: int = -1) -> Problem:
    return Problem(f"id{row}", text, answer, row=row)


def test_exact_duplicates_ignore_case_and_spacing():
    ps = [prob("What is 2 + 3?", row=0), prob("what is 2+3 ?", row=1), prob("What is 2+4?", row=2)]
    kept, dropped = drop_exact_duplicates(ps)
    assert [p.row for p in kept] == [0, 2]
    assert [(r.index, r.reason, r.detail, r.prompt_id) for r in dropped] == [
        (1, "duplicate", "same text as row 0 (id0)", "id1")]


def test_near_duplicate_jaccard_by_hand():
    # 10 words, n=5: 6 shingles each. Changing the last word changes only the last shingle,
    # so 5 are shared: Jaccard = 5 / (6 + 6 - 5) = 5/7 = 0.714.
    a = "the quick brown fox jumps over the lazy sleeping dog"
    b = "the quick brown fox jumps over the lazy sleeping cat"
    assert jaccard(ngrams(words(a), 5), ngrams(words(b), 5)) == pytest.approx(5 / 7)
    assert [r.reason for r in drop_near_duplicates([prob(a, row=0), prob(b, row=1)], n=5, threshold=0.71)[1]] \
        == ["near_duplicate"]
    assert drop_near_duplicates([prob(a, row=0), prob(b, row=1)], n=5, threshold=0.72)[1] == []


def test_near_duplicate_needs_the_same_answer():
    base = ("A board game spinner is divided into three regions labeled A, B and C. The probability of the "
            "arrow stopping on region A is {} and on region B is 1/2. What is the probability of stopping on C?")
    reworded = base.replace("What is", "Find")
    ps = [prob(base.format("1/3"), "\\frac{1}{6}", 0),
          prob(reworded.format("1/3"), "$\\dfrac{1}{6}$", 1),  # reworded, same answer written differently
          prob(base.format("1/4"), "\\frac{1}{4}", 2)]  # a number changed: a new problem with a new answer
    similar = [jaccard(ngrams(words(ps[0].problem), 5), ngrams(words(p.problem), 5)) for p in ps[1:]]
    assert min(similar) > 0.75  # both pairs look alike to shingles (0.77, 0.79)
    kept, dropped = drop_near_duplicates(ps, n=5, threshold=0.75)
    assert [p.row for p in kept] == [0, 2]
    assert [r.index for r in dropped] == [1] and "with row 0 (id0), same answer" in dropped[0].detail


def test_answer_key():
    assert answer_key("\\dfrac{1}{6}") == answer_key(" \\frac{1}{6}") == answer_key("$\\tfrac{1}{6}$")
    assert answer_key("\\left( 1, 2 \\right)") == answer_key("(1,2)")
    assert answer_key("x") != answer_key("X")


def test_benchmark_overlap_share_by_hand():
    # n=2: "a b c d" has bigrams {ab, bc, cd}; the benchmark "a b c" has {ab, bc}: share 2/3.
    bench = {g for g in ngrams(words("a b c"), 2)}
    assert overlap_share("a b c d", bench, 2) == pytest.approx(2 / 3)
    ps = [prob("a b c d", row=4), prob("x y z", row=5)]
    kept, dropped = drop_benchmark_overlap(ps, ["a b c"], n=2, threshold=0.66)
    assert [p.row for p in kept] == [5]
    assert [(r.index, r.reason, r.detail) for r in dropped] == [(4, "benchmark_overlap", "67% of 2-grams appear "
                                                                 "in a benchmark")]
    assert drop_benchmark_overlap(ps, ["a b c"], n=2, threshold=0.67)[1] == []
    # a text shorter than n is one shingle: an identical short benchmark problem is caught
    assert len(drop_benchmark_overlap([prob("2+2?")], ["2 + 2 ?"], n=8, threshold=1.0)[1]) == 1


def test_long_prompts_and_empty_inputs():
    ps = [prob("one two three", row=0), prob("one two three four five", row=1)]
    kept, dropped = drop_long_prompts(ps, lambda t: len(t.split()), max_tokens=4)
    assert [p.row for p in kept] == [0] and [(r.index, r.detail) for r in dropped] == [(1, "5 prompt tokens > 4")]
    for f in (drop_exact_duplicates, drop_near_duplicates, lambda ps: drop_benchmark_overlap(ps, [])):
        assert f([]) == ([], [])
    assert drop_benchmark_overlap([prob("")], ["x"])[0] == [prob("")]  # no n-grams: never "overlapping"


# ------------------------------------------------------------------ the real MATH files


@pytest.fixture(scope="module")
def math_sets():
    if not (DATA / "math" / "test.parquet").is_file():
        pytest.skip(f"real data not found at {DATA} (the shared data folder beside the checkout)")
    return load_problems(str(DATA / "math" / "train.parquet")), load_problems(str(DATA / "math" / "test.parquet"))


def test_real_math_loads(math_sets):
    (train, train_bad), (test, test_bad) = math_sets
    assert len(test) == 5000 and test_bad == []  # the one empty target is recovered from its \boxed{}
    # two training rows have an empty target and an empty \boxed{} in their solution
    assert len(train) == 7498 and count_reasons(train_bad) == {"empty_answer": 2}
    aime, bad = load_problems(str(DATA / "aime2025" / "test.parquet"))
    assert len(aime) == 30 and bad == []


def test_real_math_decontamination_sample(math_sets):
    (train, _), (test, _) = math_sets
    bench = [p.problem for p in test]
    sample = train[:1500]  # a sample keeps the test fast; the full count is measured in docs/data.md
    kept, dropped = drop_benchmark_overlap(sample, bench, n=8, threshold=0.5)
    assert len(kept) + len(dropped) == len(sample)
    assert 0.05 < len(dropped) / len(sample) < 0.2  # ~11% of MATH train overlaps MATH test at 8-gram/0.5
    grams = set().union(*(ngrams(words(t), 8) for t in bench))
    by_id = {p.prompt_id: p for p in sample}
    assert all(overlap_share(by_id[r.prompt_id].problem, grams, 8) >= 0.5 for r in dropped)
    # every training problem whose text is also a test problem is dropped even at threshold 1.0
    test_texts = {" ".join(words(t)) for t in bench}
    verbatim = [p for p in train if " ".join(words(p.problem)) in test_texts]
    assert len(verbatim) == 2
    assert drop_benchmark_overlap(verbatim, bench, threshold=1.0)[0] == []


def test_heldout_subset_is_a_seeded_sample_of_the_benchmarked_pool_in_source_order():
    from masa.steps.prepare import heldout_subset

    # A held-out file sorted by difficulty: rows 0-49 easy, 50-99 hard, 100-119 beyond the benchmark's
    # max_problems. The first 20 (the old rule) would all be easy; a sample of the pool is not.
    rows = [Problem(prompt_id=f"p{i}", problem=f"q{i}", answer=str(i), row=i) for i in range(120)]
    got = heldout_subset(rows, 20, pool=100, seed=0)
    idx = [p.row for p in got]
    assert len(idx) == 20 and idx == sorted(idx) and len(set(idx)) == 20
    assert max(idx) < 100  # only problems the final benchmark also scores
    assert any(i < 50 for i in idx) and any(i >= 50 for i in idx)
    assert [p.row for p in heldout_subset(rows, 20, pool=100, seed=0)] == idx  # same seed, same subset
    assert [p.row for p in heldout_subset(rows, 20, pool=100, seed=1)] != idx
    assert heldout_subset(rows, 500, pool=None, seed=0) == rows  # asking for more: all of them


def test_toy_seed_is_another_toy_and_another_fingerprint():
    """`toy_seed` builds another toy (its own recipe hash, so its own cache directory) and keys the base
    model's and the benchmarks' fingerprints, so runs on two toy seeds never reuse each other's parts;
    seed 0 keeps the names (and so the stores) that runs had before the key existed."""
    from masa.config import load_config
    from masa.steps.prepare import toy_recipe_for
    from masa.steps.promote import eval_key

    c0, c3 = load_config("toy"), load_config("toy", ["toy_seed=3"])
    r0, r3 = toy_recipe_for(c0), toy_recipe_for(c3)
    assert (r0.seed, r3.seed) == (0, 3) and r0.hash() != r3.hash()
    assert dataclasses.replace(r3, seed=0) == r0  # only the seed differs
    assert (c0.toy_name, c3.toy_name) == (c0.toy_recipe, f"{c0.toy_recipe}@seed3")  # "broad", the preset's
    assert eval_key(c0) != eval_key(c3)
    with pytest.raises(ValueError, match="toy_seed"):
        load_config("toy", ["toy_seed=-1"])
