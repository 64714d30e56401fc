"""Bad input everywhere: random rows through the data loader and filters, random meta texts through the
meta parser and the rewards (never raise, stay in range), configs with several errors reported at once,
runs whose data is entirely invalid, and model paths / URIs that do not hold a model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masa.algo.meta import MetaParseFailure, MetaPrediction, parse_meta
from masa.algo.rewards import META_REWARDS, length_reward, meta_reward, notion_rewards, pass_rate_reward
from masa.config import load_config, preset_dict
from masa.configbase import ConfigError
from masa.data.filter import (
    drop_benchmark_overlap,
    drop_exact_duplicates,
    drop_long_prompts,
    drop_near_duplicates,
)
from masa.data.records import (
    DataError,
    load_problems,
    normalise_text,
    require_problems,
    rows_to_problems,
    summarize_rejections,
    write_verl_parquet,
)
from masa.storage import ModelNotFoundError, StorageError, resolve_model

# ------------------------------------------------------------------ strategies

# every Unicode category, plus lone surrogates (what a JSON "\ud800" escape decodes to)
TEXT = st.text(alphabet=st.characters(exclude_categories=()) | st.sampled_from(["\ud800", "\udfff", "\x00"]),
               max_size=24)
SPECIAL = st.sampled_from(["user", "system", "", "  ", "\\boxed{3}", "\\boxed{", "\\boxed{}", "NaN", "12"])
LEAF = (st.none() | st.booleans() | st.integers(-10**1300, 10**1300) | st.integers(-5, 5)
        | st.floats(allow_nan=True, allow_infinity=True) | TEXT | SPECIAL)
KEY = st.sampled_from(["prompt", "reward_model", "ground_truth", "target", "solution", "answer", "problem",
                       "question", "id", "unique_id", "role", "content", "extra_info", "data_source"]) | TEXT
VALUE = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=4),
                     max_leaves=10)
MESSAGE = st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]) | VALUE, "content": VALUE | TEXT})
VERL_ROW = st.fixed_dictionaries(
    {"prompt": VALUE | st.lists(MESSAGE, max_size=2),
     "reward_model": VALUE | st.fixed_dictionaries({"ground_truth": VALUE | st.fixed_dictionaries(
         {"target": VALUE, "solution": VALUE})})},
    optional={"id": VALUE, "data_source": VALUE, "extra_info": VALUE})
FLAT_ROW = st.fixed_dictionaries({}, optional={k: VALUE for k in ("problem", "question", "answer", "target",
                                                                   "solution", "id", "data_source")})
# plausible rows too, so that kept problems reach the filters and the parquet round trip
WORDS = st.lists(st.sampled_from(["What", "is", "the", "sum", "of", "2", "3", "$x^2$", "?", "\\frac{1}{2}", "é"]),
                 min_size=1, max_size=12).map(" ".join)
GOOD_VERL = st.fixed_dictionaries(
    {"prompt": st.lists(st.fixed_dictionaries({"role": st.just("user"), "content": WORDS | TEXT}), min_size=1,
                        max_size=2),
     "reward_model": st.fixed_dictionaries({"ground_truth": st.fixed_dictionaries(
         {"target": WORDS | LEAF, "solution": WORDS.map(lambda w: f"so \\boxed{{{w}}}") | LEAF})})},
    optional={"data_source": LEAF, "id": st.integers(0, 2)})
GOOD_FLAT = st.fixed_dictionaries({"problem": WORDS | TEXT, "answer": WORDS | LEAF},
                                  optional={"id": st.integers(0, 2), "solution": WORDS | LEAF})
ROW = GOOD_VERL | GOOD_FLAT | VERL_ROW | FLAT_ROW | st.dictionaries(KEY, VALUE, max_size=5) | VALUE
ROWS = st.lists(ROW, max_size=8)


# ------------------------------------------------------------------ data rows and filters


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS)
def test_random_rows_never_raise_and_every_row_is_accounted(rows):
    kept, rejected = rows_to_problems(rows, source="random")
    assert sorted([p.row for p in kept] + [r.index for r in rejected]) == list(range(len(rows)))
    for p in kept:
        assert p.problem and p.answer and p.problem == normalise_text(p.problem)
        (p.problem + p.answer + (p.solution or "") + p.data_source).encode("utf-8")  # parquet can store it
    assert all(r.reason and r.detail for r in rejected)
    summarize_rejections(rejected)

    n = len(kept)
    for f in (drop_exact_duplicates, drop_near_duplicates,
              lambda ps: drop_benchmark_overlap(ps, [str(r) for r in rows], n=3, threshold=0.5),
              lambda ps: drop_long_prompts(ps, len, max_tokens=10)):
        kept, dropped = f(kept)
        assert len(kept) + len(dropped) == n
        n = len(kept)

    with tempfile.TemporaryDirectory() as d:  # kept problems always write and read back unchanged
        write_verl_parquet(kept, Path(d) / "p.parquet")
        again, bad = load_problems(str(Path(d) / "p.parquet"))
    assert bad == [] and [p.prompt_id for p in again] == [p.prompt_id for p in kept]


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.text(max_size=40) | ROW.map(lambda r: json.dumps(r, default=str)), max_size=6))
def test_random_jsonl_lines_never_raise(lines):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "rows.jsonl"
        path.write_text("\n".join(line.replace("\n", " ") for line in lines), encoding="utf-8", errors="replace")
        kept, rejected = load_problems(str(path))
    assert len(kept) + len(rejected) <= len(lines)


# ------------------------------------------------------------------ meta texts and rewards

NUMBERISH = st.integers(-3, 40) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=4) | st.none()
NOTIONS = st.lists(TEXT | st.sampled_from(["fraction", "sum", "prime numbers"]), max_size=3) | TEXT | NUMBERISH
META_OBJECT = (st.fixed_dictionaries({}, optional={"math_notion": NOTIONS, "pass_rate": NUMBERISH,
                                                   "solution_length": NUMBERISH})
               | st.fixed_dictionaries({"math_notion": st.lists(st.sampled_from(["fraction", "sum", "prime"])),
                                        "pass_rate": st.integers(0, 8), "solution_length": st.integers(1, 64)}))
META_TEXT = (st.text(max_size=120)
             | st.builds(lambda r, o: f"<meta>{r}</meta>\n{json.dumps(o)}", TEXT, META_OBJECT)
             | st.builds(lambda r, o: f"<meta>{r}</meta> {o!r} trailing", TEXT, META_OBJECT))


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(META_TEXT, min_size=1, max_size=4), G=st.integers(1, 8), max_tokens=st.integers(1, 64),
       data=st.data())
def test_random_meta_texts_through_parser_and_rewards(texts, G, max_tokens, data):
    parsed = [parse_meta(t, n_solution=G, max_response_tokens=max_tokens) for t in texts]
    ok = [isinstance(p, MetaPrediction) for p in parsed]
    for p in parsed:
        assert isinstance(p, (MetaPrediction, MetaParseFailure))
        if isinstance(p, MetaPrediction):
            assert 0 <= p.pass_rate <= G and 1 <= p.solution_length <= max_tokens
            assert all(isinstance(n, str) and n for n in p.notions)
        else:
            assert p.reason
    k = torch.tensor([[p.pass_rate if o else 0 for p, o in zip(parsed, ok, strict=True)]])
    length = torch.tensor([[p.solution_length if o else 1 for p, o in zip(parsed, ok, strict=True)]])
    observed = torch.tensor([data.draw(st.integers(0, G)) / G])
    lengths = torch.tensor([data.draw(st.lists(st.integers(0, max_tokens), min_size=G, max_size=G))])
    correct = data.draw(st.lists(st.booleans(), min_size=G, max_size=G))
    solutions = data.draw(st.lists(TEXT | st.sampled_from(["a fraction sum", "prime"]), min_size=G, max_size=G))

    r_pass = pass_rate_reward(k, observed, n_solution=G)
    r_len = length_reward(length, lengths, torch.tensor([correct]))
    r_notion = notion_rewards([p.notions if o else None for p, o in zip(parsed, ok, strict=True)],
                              problem=data.draw(TEXT), solution_texts=solutions, solution_correct=correct)
    assert ((r_pass >= 0.01 - 1e-6) & (r_pass <= 1)).all()
    for r in (r_len, r_notion):
        assert ((r >= 0) & (r <= 1)).all()
    weights = data.draw(st.tuples(*[st.floats(0, 10)] * 3).filter(lambda w: sum(w) > 1e-3))
    for variant in META_REWARDS.names():
        r = meta_reward(r_pass, r_len, r_notion.unsqueeze(0), torch.tensor([ok]), variant=variant,
                        weight_pass_rate=weights[0], weight_length=weights[1], weight_notion=weights[2])
        assert torch.isfinite(r).all() and ((r >= 0) & (r <= 1 + 1e-6)).all()
        assert (r[~torch.tensor([ok])] == 0).all()  # a parse failure scores 0


# ------------------------------------------------------------------ runs whose data is entirely invalid


def test_all_rows_invalid_stops_early_listing_reasons(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"problem": "What is 1+1?"}\n{"problem": 7, "answer": "1"}\nnot json\n'
                    '{"problem": "What is 2+2?", "answer": ""}\n{"problem": "What is 3+3?"}\n')
    problems, rejected = load_problems(str(path))
    with pytest.raises(DataError) as e:
        require_problems(problems, rejected, source=str(path))
    msg = str(e.value)
    assert f"no usable problems in {path}: all 5 rows were dropped" in msg
    # one line per reason, most frequent first, citing rows and why
    assert msg.splitlines()[1:] == [
        "missing_answer: 2 (row 0: no reference answer (answer, target, ground_truth, solution_answer) and no "
        "\\boxed{} in a solution; row 4: no reference answer (answer, target, ground_truth, solution_answer) "
        "and no \\boxed{} in a solution)",
        "bad_json: 1 (row 2: line 3: Expecting value (column 1))",
        "bad_prompt: 1 (row 1: `problem` is int, not text)",
        "empty_answer: 1 (row 3: reference answer is empty)"]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no problems in .*empty.jsonl: the source has no rows"):
        require_problems(*load_problems(str(tmp_path / "empty.jsonl")), source=str(tmp_path / "empty.jsonl"))
    require_problems(*rows_to_problems([{"problem": "ok", "answer": "1"}], source="x"), source="x")  # passes


# ------------------------------------------------------------------ configs


def test_config_reports_every_problem_at_once(tmp_path):
    data = preset_dict("toy")
    data["colour"] = "red"                                      # unknown top-level key
    data["data"]["bogus"] = 1                                   # unknown nested key
    data["rollout"]["temperature"] = "hot"                      # wrong type
    data["data"]["near_dup_threshold"] = 1.5                    # out of range
    data["train"]["samples_per_step"] = 12                      # not a multiple of n_solution (8)
    data["train"].pop("epochs", None)                           # (passes apply without samples_per_step)
    data["train"].pop("steps_per_round", None)                  # (derived with samples_per_step)
    preset = tmp_path / "broken.yaml"
    preset.write_text(yaml.safe_dump(data))

    with pytest.raises(ConfigError) as e:
        load_config(str(preset), ["rounds=0", "benchmark.k=many"])
    keys = [p.split(":")[0] for p in e.value.problems]
    assert sorted(keys) == ["benchmark.k", "colour", "data.bogus", "data.near_dup_threshold", "rollout.temperature",
                            "rounds", "train.samples_per_step"]
    text = str(e.value)
    assert "valid keys: algorithm, baselines, benchmark" in text and "expected float, got 'hot'" in text
    assert "must be a multiple of algorithm.n_solution (G=8)" in text


def test_config_unreadable_presets_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="neither a built-in preset"):
        load_config(str(tmp_path / "absent.yaml"))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(tmp_path / "list.yaml"))
    with pytest.raises(ConfigError, match="overrides look like key.sub=value"):
        load_config("toy", ["rounds"])
    # broken YAML in one line each: the problem, where, and where the unclosed bracket opened
    (tmp_path / "broken.yaml").write_text("name: x\nrounds: [1\n")
    with pytest.raises(ConfigError) as broken:
        load_config(str(tmp_path / "broken.yaml"))
    assert broken.value.problems == [f"preset {tmp_path / 'broken.yaml'}: not valid YAML: expected ',' or ']', "
                                     "but got '<stream end>' at line 3, column 1 (while parsing a flow sequence "
                                     "at line 2, column 9)"]
    with pytest.raises(ConfigError) as bad_value:
        load_config("toy", ["algorithm.expert={bad"])
    assert bad_value.value.problems == ["algorithm.expert: cannot parse value '{bad': expected ',' or '}', but got "
                                        "'<stream end>' at line 1, column 5 (while parsing a flow mapping at "
                                        "line 1, column 1)"]
    with pytest.raises(ConfigError, match="data.train.x: train is not a section"):
        load_config("toy", ["data.train.x=1"])


def test_config_cross_check_reported_beside_a_type_error_in_the_same_section():
    # the run-level check (12 samples is no multiple of G = 8) sees the section built from its valid
    # keys, not the section's defaults, so it reports in the same go as the type error
    # (the preset's steps_per_round is set back to 1, which samples_per_step asks)
    with pytest.raises(ConfigError) as e:
        load_config("toy", ["train.lr=fast", "train.steps_per_round=1", "train.samples_per_step=12"])
    assert [p.split(":")[0] for p in e.value.problems] == ["train.lr", "train.samples_per_step"]
    assert "multiple of algorithm.n_solution (G=8)" in e.value.problems[1]
    # a section whose valid keys fail its own checks too is left at its defaults for the run-level
    # checks: each problem is reported once
    with pytest.raises(ConfigError) as e:
        load_config("toy", ["train.lr=fast", "train.samples_per_step=12"])
    assert [p.split(":")[0] for p in e.value.problems] == ["train.lr", "train.steps_per_round"]


# ------------------------------------------------------------------ model paths and URIs


def test_model_path_errors_name_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "absent")):
        resolve_model(str(tmp_path / "absent"))
    (tmp_path / "noconf").mkdir()
    with pytest.raises(ModelNotFoundError, match="noconf.*config.json"):
        resolve_model(str(tmp_path / "noconf"))
    with pytest.raises(ModelNotFoundError, match="invalid model reference ''"):
        resolve_model("")


@pytest.mark.slow
def test_model_s3_missing_bucket_names_the_uri(s3_server, tmp_path, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    with pytest.raises(StorageError, match="s3://no-such-model-bucket/qwen"):
        resolve_model("s3://no-such-model-bucket/qwen", cache_dir=str(tmp_path))
    s3_server.make_bucket("masa-models-empty")
    with pytest.raises(ModelNotFoundError, match="s3://masa-models-empty/absent.*no objects"):
        resolve_model("s3://masa-models-empty/absent", cache_dir=str(tmp_path))



@pytest.mark.parametrize("command, flag", [
    (["toy", "build", "--recipe", "smoke", "--out"], "--out"),
    (["compile", "--preset", "smoke", "--image-registry", "reg.example", "--store", "s3://b/p", "--output"],
     "--output"),
])
def test_a_folder_a_command_cannot_write_is_named_before_any_work(tmp_path, command, flag):
    # a file where a folder must go (ENOTDIR for root too): before a build of minutes, not after it
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "x" / "p.yaml" if flag == "--output" else blocker / "x"
    r = subprocess.run([sys.executable, "-m", "masa.cli", *command, str(target)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{flag}: cannot write to {target if flag == '--out' else target.parent}: Not a directory" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_a_missing_shard_given_to_masa_score_is_named_as_missing(tmp_path):
    # pyarrow's FileNotFoundError carries the bare path as its message: "masa score: /x.parquet" said
    # which file but not what was wrong with it
    missing = tmp_path / "rollouts.parquet"
    r = subprocess.run([sys.executable, "-m", "masa.cli", "score", "--preset", "smoke", "--rollouts", str(missing),
                        "--model", str(tmp_path), "--out", str(tmp_path / "scored")],
                       capture_output=True, text=True, timeout=300)
    assert (r.returncode, r.stderr) == (2, f"masa score: not found: {missing}\n")
