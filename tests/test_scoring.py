"""Scoring step on a hand-built rollout shard: rewards, advantages, experts and stats by hand."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from masa.algo.config import AdvantageConfig, AlgorithmConfig, CutoffConfig, ExpertConfig, RewardConfig
from masa.algo.meta import format_meta_completion, parse_meta
from masa.runner.scoring import score_shard

G, GM, MAXT = 4, 2, 64
SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("group_id", pa.int32()), ("path", pa.string()), ("sample_idx", pa.int32()),
    ("round", pa.int32()), ("algorithm", pa.string()), ("problem", pa.string()), ("answer", pa.string()),
    ("prompt_token_ids", pa.list_(pa.int32())), ("response_token_ids", pa.list_(pa.int32())),
    ("logprobs", pa.list_(pa.float32())), ("text", pa.string()), ("finish_reason", pa.string()),
    ("meta_pass_rate", pa.int32()), ("meta_solution_length", pa.int32()), ("meta_notions", pa.list_(pa.string())),
    ("meta_parse_error", pa.string()), ("gated", pa.bool_()), ("max_tokens", pa.int32()),
])

P0_META = format_meta_completion("a small sum", notions=["Addition", "integers"], pass_rate=2, solution_length=4)
P1_META_GOOD = format_meta_completion("easy", notions=["subtraction"], pass_rate=4, solution_length=2)
P1_META_BAD = format_meta_completion("hard", notions=[], pass_rate=0, solution_length=60)


def _row(gid, path, idx, problem, answer, text, n_tokens, finish="stop", gated=False):
    return {"prompt_id": f"q{gid}", "group_id": gid, "path": path, "sample_idx": idx, "round": 0,
            "algorithm": "masa", "problem": problem, "answer": answer, "prompt_token_ids": [1, 2, gid],
            "response_token_ids": list(range(3, 3 + n_tokens)), "logprobs": [-1.0] * n_tokens, "text": text,
            "finish_reason": finish, "meta_pass_rate": None, "meta_solution_length": None, "meta_notions": None,
            "meta_parse_error": None, "gated": gated, "max_tokens": MAXT}


def build_shard(path, prompt1_finish="stop"):
    p0, p1, p2 = "What is 2+3?", "What is 10-4?", "What is 7*6?"
    rows = [
        # prompt 0: rewards [1, 1, 0, 0] (s3 is correct but cut off); correct lengths {3, 5}
        _row(0, "solution", 0, p0, "5", "Add them with addition: \\boxed{5}", 3),
        _row(0, "solution", 1, p0, "5", "Count on with addition and integers: \\boxed{5}", 5),
        _row(0, "solution", 2, p0, "5", "Guess with integers: \\boxed{6}", 4),
        _row(0, "solution", 3, p0, "5", "Count with addition: \\boxed{5}", 8, finish="cutoff"),
        _row(0, "meta", 1, p0, "5", "<meta>hmm</meta> no idea", 6),  # listed out of order on purpose
        _row(0, "meta", 0, p0, "5", P0_META, 7),
        # prompt 1 (group id 5): all correct, all length 2 -> zero-variance solution group
        *[_row(5, "solution", i, p1, "6", "\\boxed{6}", 2, finish=prompt1_finish) for i in range(G)],
        _row(5, "meta", 0, p1, "6", P1_META_GOOD, 5),
        _row(5, "meta", 1, p1, "6", P1_META_BAD, 5),
        # prompt 2 (group id 7): gated, meta rows only
        _row(7, "meta", 0, p2, "42", P1_META_GOOD, 4, gated=True),
        _row(7, "meta", 1, p2, "42", P1_META_BAD, 4, gated=True),
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = set()
    for t in (P0_META, P1_META_GOOD, P1_META_BAD):
        words.update(pre_tokenizers.Whitespace().pre_tokenize_str(t))
    vocab = {"[UNK]": 0, "[EOS]": 1}
    for w, _ in sorted(words):
        vocab.setdefault(w, len(vocab))
    for d in "0123456789":
        vocab.setdefault(d, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    out = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]").save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tokenizer_dir):
    d = tmp_path_factory.mktemp("score")
    build_shard(d / "rollouts.parquet")
    algo = AlgorithmConfig(name="masa", n_solution=G, n_meta=GM)
    stats = score_shard(str(d / "rollouts.parquet"), str(d / "out"), tokenizer_path=tokenizer_dir, algo=algo,
                        max_response_tokens=MAXT, verifier_workers=0)
    table = pq.read_table(d / "out" / "scored.parquet").to_pylist()
    by = {(r["group_id"], r["path"], r["sample_idx"]): r for r in table}
    experts = pq.read_table(d / "out" / "experts.parquet").to_pylist()
    return stats, by, experts, d


def test_solution_rewards_and_advantages(scored):
    _, by, _, _ = scored
    r = [by[(0, "solution", i)] for i in range(G)]
    assert [x["correct"] for x in r] == [True, True, False, True]  # the cut-off one is still verified
    assert [x["reward"] for x in r] == [1.0, 1.0, 0.0, 0.0]        # ... but scores 0
    # [1, 1, 0, 0]: mean 0.5, unbiased std sqrt(4 * 0.25 / 3) = 0.57735 -> A = +-0.5 / 0.57735 = +-0.86603
    a = 0.5 / math.sqrt(1 / 3)
    assert [x["advantage"] for x in r] == pytest.approx([a, a, -a, -a], abs=1e-5)
    assert not any(x["zero_variance"] for x in r)
    ones = [by[(5, "solution", i)] for i in range(G)]
    assert all(x["zero_variance"] and x["advantage"] == 0.0 and x["reward"] == 1.0 for x in ones)


def test_meta_rewards_by_hand(scored):
    _, by, _, _ = scored
    m0 = by[(0, "meta", 0)]
    # observed p = 2/4 (cutoff row counts as incorrect), predicted k = 2 -> r_pass = 0.01 ** 0 = 1
    # correct lengths {3, 5}, predicted 4 -> r_length = 1
    # notions: addition +1 (s0) +1 (s1) -1 (s3, cut off = incorrect) = +1 > 0;
    #          integer  +1 (s1) -1 (s2) = 0  -> r_notion = 1/2
    # reward = (1 + 1 + 0.5) / 3 = 0.83333
    assert (m0["reward_pass_rate"], m0["reward_length"], m0["reward_notion"]) == (1.0, 1.0, 0.5)
    assert m0["reward"] == pytest.approx(2.5 / 3)
    assert m0["meta_pass_rate"] == 2 and m0["meta_notions"] == ["Addition", "integers"]
    bad = by[(0, "meta", 1)]
    assert bad["reward"] == 0.0 and bad["meta_parse_error"] == "no JSON object" and bad["reward_pass_rate"] is None
    # meta group [0.8333, 0]: two values -> A = +-1/sqrt(2) with the unbiased std
    assert m0["advantage"] == pytest.approx(1 / math.sqrt(2), abs=1e-5)
    assert bad["advantage"] == pytest.approx(-1 / math.sqrt(2), abs=1e-5)
    # prompt 1: good = (1 + 1 + 0) / 3 (lengths all 2, inclusive range [2, 2]; "subtraction" never used)
    #           bad  = (0.01 ** |1 - 0| + 0 + 0) / 3 = 0.01 / 3
    assert by[(5, "meta", 0)]["reward"] == pytest.approx(2 / 3)
    assert by[(5, "meta", 1)]["reward"] == pytest.approx(0.01 / 3)


def test_gated_prompt_meta_rows_are_neutral(scored):
    _, by, _, _ = scored
    for i in range(GM):
        r = by[(7, "meta", i)]
        assert r["reward"] == 0.0 and r["advantage"] == 0.0 and r["zero_variance"]
        assert r["reward_pass_rate"] is None and r["meta_pass_rate"] is not None  # parsed, not scorable


def test_experts(scored, tokenizer_dir):
    from transformers import AutoTokenizer

    _, _, experts, _ = scored
    assert [e["prompt_id"] for e in experts] == ["q0", "q5"]
    e0, e1 = experts
    # prompt 0: 2 of 4 rewarded -> pass_rate 2; mean correct length (3 + 5) / 2 = 4
    assert parse_meta(e0["text"], n_solution=G, max_response_tokens=MAXT).pass_rate == 2
    assert e0["text"].startswith("<meta>a small sum</meta>\n") and '"solution_length": 4' in e0["text"]
    assert e0["reward"] == pytest.approx(2.5 / 3) and e0["prompt_token_ids"] == [1, 2, 0]
    # prompt 1: the good prediction (2/3 > 0.5), values replaced by 4 of 4 and length 2
    assert '"pass_rate": 4, "solution_length": 2' in e1["text"]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert e1["response_token_ids"][-1] == tok.eos_token_id
    assert e1["response_token_ids"][:-1] == tok(e1["text"], add_special_tokens=False)["input_ids"]


def test_expert_token_weights_stress_the_predicted_values(tmp_path, tokenizer_dir):
    # value_weight 10: the tokens spelling the written pass_rate (4) and solution_length (2) of prompt 1's
    # expert weigh 10, every other token (eos included) 1. The default fixture (weight 1) is all ones.
    from transformers import AutoTokenizer

    build_shard(tmp_path / "rollouts.parquet")
    algo = AlgorithmConfig(name="masa", n_solution=G, n_meta=GM, expert=ExpertConfig(value_weight=10.0))
    score_shard(str(tmp_path / "rollouts.parquet"), str(tmp_path / "out"), tokenizer_path=tokenizer_dir,
                algo=algo, max_response_tokens=MAXT, verifier_workers=0)
    e1 = pq.read_table(tmp_path / "out" / "experts.parquet").to_pylist()[1]
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    stressed = [tok.convert_ids_to_tokens(t) for t, w in zip(e1["response_token_ids"], e1["token_weights"],
                                                             strict=True) if w == 10.0]
    assert stressed == ["4", "2"]
    assert sorted(set(e1["token_weights"])) == [1.0, 10.0] and e1["token_weights"][-1] == 1.0


def _score(tmp_path, tokenizer_dir, meta_targets, prompt1_finish="stop"):
    tmp_path.mkdir(exist_ok=True)
    build_shard(tmp_path / "rollouts.parquet", prompt1_finish)
    algo = AlgorithmConfig(name="masa", n_solution=G, n_meta=GM, cutoff=CutoffConfig(meta_targets=meta_targets))
    stats = score_shard(str(tmp_path / "rollouts.parquet"), str(tmp_path / "out"), tokenizer_path=tokenizer_dir,
                        algo=algo, max_response_tokens=MAXT, verifier_workers=0)
    table = pq.read_table(tmp_path / "out" / "scored.parquet").to_pylist()
    experts = pq.read_table(tmp_path / "out" / "experts.parquet").to_pylist()
    return stats, {(r["group_id"], r["path"], r["sample_idx"]): r for r in table}, experts


def test_meta_targets_from_the_uncut_solutions(tmp_path, tokenizer_dir):
    stats, by, experts = _score(tmp_path, tokenizer_dir, "uncut")
    # the solutions' own rewards do not change: the cut s3 still scores 0
    assert [by[(0, "solution", i)]["reward"] for i in range(G)] == [1.0, 1.0, 0.0, 0.0]
    m0 = by[(0, "meta", 0)]
    # prompt 0 observed over its 3 uncut solutions: 2 of 3. Predicted 2 of 4: r_pass = 0.01 ** |2/4 - 2/3|
    # = 0.01 ** (1/6) = 0.46416; correct lengths {3, 5}, predicted 4 -> 1; notions: addition +1 (s0) +1 (s1)
    # (s3 left out) > 0, integers +1 (s1) -1 (s2) = 0 -> 1/2. Reward (0.46416 + 1 + 0.5) / 3 = 0.65472
    assert m0["reward_pass_rate"] == pytest.approx(0.01 ** (1 / 6), abs=1e-6)
    assert (m0["reward_length"], m0["reward_notion"]) == (1.0, 0.5)
    assert m0["reward"] == pytest.approx((0.01 ** (1 / 6) + 1.5) / 3, abs=1e-6)
    # its expert (0.65472 > min_reward 0.5) states round_half_up(2/3 * 4) = 3 of 4 and length (3 + 5) / 2 = 4
    assert '"pass_rate": 3, "solution_length": 4' in experts[0]["text"]
    assert stats["train_accuracy"] == pytest.approx(6 / 8)


def test_a_prompt_cut_whole_gives_its_meta_rows_no_target(tmp_path, tokenizer_dir):
    # prompt 1's four solutions all cut: with "all" it observes 0 of 4, so the prediction "0" (P1_META_BAD)
    # earns the whole pass-rate reward, 0.01 ** 0 = 1, and the cut makes its own prediction true
    _, by, _ = _score(tmp_path / "all", tokenizer_dir, "all", prompt1_finish="cutoff")
    assert by[(5, "meta", 1)]["reward_pass_rate"] == 1.0
    # with "uncut" the prompt observes nothing: its meta rows are neutral as a gated prompt's, no expert
    stats, by, experts = _score(tmp_path / "uncut", tokenizer_dir, "uncut", prompt1_finish="cutoff")
    for i in range(GM):
        r = by[(5, "meta", i)]
        assert r["reward"] == 0.0 and r["advantage"] == 0.0 and r["reward_pass_rate"] is None
    assert [e["prompt_id"] for e in experts] == ["q0"]
    assert stats["cutoff_samples"] == 1 + G


def test_default_expert_token_weights_are_one(scored):
    _, _, experts, _ = scored
    assert all(set(e["token_weights"]) == {1.0} for e in experts)


def test_stats(scored):
    stats, _, _, _ = scored
    assert stats["train_accuracy"] == pytest.approx(6 / 8)
    assert stats["meta_parse_rate"] == pytest.approx(5 / 6)
    # parsed meta rows of prompts with solutions: |2/4 - 1/2| = 0, |4/4 - 1| = 0, |0/4 - 1| = 1
    assert stats["meta_pass_rate_mae"] == pytest.approx(1 / 3)
    # medians (what gating acts on): prompt 0 -> 2 (observed 2 of 4): 0; prompt 1 -> (4 + 0) / 2 = 2
    # (observed 4 of 4): |2 - 4| / 4 = 0.5; the gated prompt 2 has nothing observed. Mean 0.25.
    assert stats["meta_pass_rate_mae_median"] == pytest.approx(0.25)
    assert stats["meta_reward_mean"] == pytest.approx((2.5 / 3 + 0 + 2 / 3 + 0.01 / 3) / 4)
    assert stats["meta_reward_pass_rate_mean"] == pytest.approx((1 + 1 + 0.01) / 3)
    assert stats["meta_reward_length_mean"] == pytest.approx(2 / 3)
    assert stats["meta_reward_notion_mean"] == pytest.approx(0.5 / 3)
    assert (stats["n_experts"], stats["gated_prompts"], stats["cutoff_samples"]) == (2, 1, 1)
    assert (stats["zero_variance_solution_groups"], stats["zero_variance_meta_groups"]) == (1, 1)
    # prompts 0 and 1 have solution groups (the gated prompt 2 none); prompt 1's 4 of 4 is the zero-variance one
    assert stats["solution_groups"] == 2
    assert stats["zero_variance_solution_tokens"] == G * 2  # prompt 1's G solutions of 2 tokens
    assert stats["rollout_tokens"] == (3 + 5 + 4 + 8 + 6 + 7) + (4 * 2 + 5 + 5) + (4 + 4)
    assert stats["n_prompts"] == 3 and stats["verifier_errors"] == 0
    # gating's evidence: both rolled-out medians are 2, inside (0, 4), so no candidate; prompt 0's 2 of 4 is
    # the one mixed group (masa.algo.gating.gate_signal)
    assert (stats["meta_gate_hits"], stats["meta_gate_candidates"]) == (0, 0)
    assert (stats["meta_gate_mixed"], stats["meta_mixed"]) == (0, 1)


def test_strict_length_and_drgrpo(scored, tokenizer_dir, tmp_path):
    _, _, _, d = scored
    algo = AlgorithmConfig(n_solution=G, n_meta=GM, reward=RewardConfig(length_strict=True),
                           advantage=AdvantageConfig(estimator="drgrpo"))
    score_shard(str(d / "rollouts.parquet"), str(tmp_path), tokenizer_path=tokenizer_dir, algo=algo,
                max_response_tokens=MAXT, verifier_workers=0)
    by = {(r["group_id"], r["path"], r["sample_idx"]): r for r in pq.read_table(tmp_path / "scored.parquet").to_pylist()}
    # strict: 4 is inside (3, 5) -> still 1; prompt 1's single length 2 is not inside (2, 2) -> 0
    assert by[(0, "meta", 0)]["reward_length"] == 1.0 and by[(5, "meta", 0)]["reward_length"] == 0.0
    # drgrpo: solution group [1, 1, 0, 0] -> r - 0.5
    assert by[(0, "solution", 0)]["advantage"] == pytest.approx(0.5)


def test_linear_pass_rate_reward_reaches_the_rows(scored, tokenizer_dir, tmp_path):
    _, _, _, d = scored
    algo = AlgorithmConfig(n_solution=G, n_meta=GM, reward=RewardConfig(pass_rate_reward="linear"))
    score_shard(str(d / "rollouts.parquet"), str(tmp_path), tokenizer_path=tokenizer_dir, algo=algo,
                max_response_tokens=MAXT, verifier_workers=0)
    by = {(r["group_id"], r["path"], r["sample_idx"]): r for r in pq.read_table(tmp_path / "scored.parquet").to_pylist()}
    # prompt 0's exact guess still scores 1; prompt 1's bad row, off by all of G: 1 - 1 = 0 (0.01 by default)
    assert by[(0, "meta", 0)]["reward_pass_rate"] == 1.0
    assert by[(5, "meta", 1)]["reward_pass_rate"] == 0.0 and by[(5, "meta", 1)]["reward"] == 0.0


def test_per_field_credit_gives_each_value_its_own_advantage(tmp_path, tokenizer_dir):
    # Meta rows re-tokenized so the sampled ids spell their text. Field groups are the parsed meta rows:
    # prompt 0 has one (the other did not parse) -> every field's advantage is 0 (singleton), so its
    #   value tokens get 0 while the rest keep the sequence's +1/sqrt(2);
    # prompt 1: pass [1, 0.01] and length [1, 0] -> +-1/sqrt(2), notion [0, 0] -> 0; sequence
    #   [2/3, 0.01/3] -> +-1/sqrt(2): only the notion tokens differ from the sequence's advantage.
    credit, by = _score_per_field(tmp_path, tokenizer_dir, RewardConfig())
    a = 1 / math.sqrt(2)

    zero = {w for w, x in credit((0, "meta", 0)) if x == 0.0}
    assert zero == {'["', "Addition", '",', '"', "integers", '"],', "2", "4"}  # the three values' tokens
    assert {x for _, x in credit((0, "meta", 0)) if x != 0.0} == {round(a, 4)}
    good = credit((5, "meta", 0))
    assert [w for w, x in good if x == 0.0] == ['["', "subtraction", '"],']
    assert {x for _, x in good if x != 0.0} == {round(a, 4)}
    assert {x for _, x in credit((5, "meta", 1)) if x != 0.0} == {round(-a, 4)}
    # unparsed, gated and solution rows keep the scalar only
    assert all(by[k]["token_advantages"] is None for k in [(0, "meta", 1), (7, "meta", 0), (0, "solution", 0)])


def test_per_field_credit_leaves_fields_the_reward_ignores_on_the_whole_reward(tmp_path, tokenizer_dir):
    # pass-rate-only: prompt 0's meta rewards are [1 (parsed), 0 (unparsed)] -> sequence advantage +1/sqrt(2);
    # its pass_rate field group is a singleton -> 0 on the digit "2"; length and notions are not paid for,
    # so their tokens keep the sequence's advantage like every other token.
    credit, _ = _score_per_field(tmp_path, tokenizer_dir, RewardConfig(meta_reward="pass-rate-only"))
    row = credit((0, "meta", 0))
    assert [w for w, x in row if x == 0.0] == ["2"]
    assert {x for w, x in row if w != "2"} == {round(1 / math.sqrt(2), 4)}


def _score_per_field(tmp_path, tokenizer_dir, reward):
    """Score build_shard's rows under per-field credit, meta rows re-tokenized so the sampled ids spell
    their text; returns credit(key) -> [(token, advantage)] and the scored rows by key."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    build_shard(tmp_path / "r.parquet")
    rows = pq.read_table(tmp_path / "r.parquet").to_pylist()
    for r in rows:
        if r["path"] == "meta":
            r["response_token_ids"] = tok(r["text"], add_special_tokens=False)["input_ids"]
            r["logprobs"] = [-1.0] * len(r["response_token_ids"])
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "r.parquet")
    algo = AlgorithmConfig(n_solution=G, n_meta=GM, reward=reward, advantage=AdvantageConfig(meta_credit="per-field"))
    score_shard(str(tmp_path / "r.parquet"), str(tmp_path / "o"), tokenizer_path=tokenizer_dir, algo=algo,
                max_response_tokens=MAXT, verifier_workers=0)
    by = {(r["group_id"], r["path"], r["sample_idx"]): r for r in pq.read_table(tmp_path / "o" / "scored.parquet").to_pylist()}

    def credit(key):
        r = by[key]
        return [(w, round(x, 4)) for w, x in zip(tok.convert_ids_to_tokens(r["response_token_ids"]),
                                                  r["token_advantages"], strict=True)]

    return credit, by


def test_sequence_credit_writes_no_token_advantages(scored):
    _, by, _, _ = scored
    assert all(r["token_advantages"] is None for r in by.values())


def test_bad_shard_errors(tmp_path, tokenizer_dir):
    pq.write_table(pa.table({"prompt_id": ["a"]}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing column.s. group_id"):
        score_shard(str(tmp_path / "bad.parquet"), str(tmp_path / "o"), tokenizer_path=tokenizer_dir,
                    algo=AlgorithmConfig(n_solution=G), max_response_tokens=MAXT, verifier_workers=0)


def test_grpo_shard_without_meta_rows(tmp_path, tokenizer_dir):
    table = pq.read_table(_shard_only_solutions(tmp_path))
    assert set(table.column("path").to_pylist()) == {"solution"}
    stats = score_shard(str(tmp_path / "sol.parquet"), str(tmp_path / "o"), tokenizer_path=tokenizer_dir,
                        algo=AlgorithmConfig(name="grpo", n_solution=G), max_response_tokens=MAXT, verifier_workers=0)
    assert stats["n_experts"] == 0 and stats["meta_pass_rate_mae"] is None and stats["meta_parse_rate"] is None
    assert stats["train_accuracy"] == pytest.approx(6 / 8)
    assert pq.read_table(tmp_path / "o" / "experts.parquet").num_rows == 0


def _shard_only_solutions(tmp_path):
    build_shard(tmp_path / "all.parquet")
    t = pq.read_table(tmp_path / "all.parquet")
    keep = [i for i, p in enumerate(t.column("path").to_pylist()) if p == "solution"]
    pq.write_table(t.take(keep), tmp_path / "sol.parquet")
    return tmp_path / "sol.parquet"


def test_one_bad_field_zeroes_only_its_own_reward(tmp_path, tokenizer_dir):
    # issue 14 item 4: prompt 0 of `build_shard` with a meta row whose solution_length (999) is out of
    # range 1..64 and one whose pass_rate (9) is out of 0..4. As the released meta_cog.compute_score,
    # each valid field keeps its component:
    #   bad length: r_pass = 0.01 ** |2/4 - 2/4| = 1, r_length = 0 (invalid), r_notion = 1/2 (as m0)
    #               -> (1 + 0 + 0.5) / 3 = 0.5
    #   bad pass:   r_pass = 0 (invalid), r_length = 1 (4 in [3, 5]), r_notion = 1/2 -> 1.5 / 3 = 0.5
    p0 = "What is 2+3?"
    bad_len = P0_META.replace('"solution_length": 4', '"solution_length": 999')
    bad_pass = P0_META.replace('"pass_rate": 2', '"pass_rate": 9')
    rows = [
        _row(0, "solution", 0, p0, "5", "Add them with addition: \\boxed{5}", 3),
        _row(0, "solution", 1, p0, "5", "Count on with addition and integers: \\boxed{5}", 5),
        _row(0, "solution", 2, p0, "5", "Guess with integers: \\boxed{6}", 4),
        _row(0, "solution", 3, p0, "5", "Count with addition: \\boxed{5}", 8, finish="cutoff"),
        _row(0, "meta", 0, p0, "5", bad_len, 7),
        _row(0, "meta", 1, p0, "5", bad_pass, 7),
        _row(0, "meta", 2, p0, "5", "<meta>x</meta> {\"pass_rate\": \"many\"}", 7),  # no valid field
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "r.parquet")
    algo = AlgorithmConfig(name="masa", n_solution=G, n_meta=3)
    stats = score_shard(str(tmp_path / "r.parquet"), str(tmp_path / "out"), tokenizer_path=tokenizer_dir,
                        algo=algo, max_response_tokens=MAXT, verifier_workers=0)
    by = {r["sample_idx"]: r for r in pq.read_table(tmp_path / "out" / "scored.parquet").to_pylist()
          if r["path"] == "meta"}
    assert (by[0]["reward_pass_rate"], by[0]["reward_length"], by[0]["reward_notion"]) == (1.0, 0.0, 0.5)
    assert by[0]["reward"] == pytest.approx(0.5)
    assert by[0]["meta_pass_rate"] == 2 and by[0]["meta_solution_length"] is None
    assert by[0]["meta_parse_error"] == "solution_length out of range 1..64: 999"
    assert (by[1]["reward_pass_rate"], by[1]["reward_length"], by[1]["reward_notion"]) == (0.0, 1.0, 0.5)
    assert by[1]["reward"] == pytest.approx(0.5)
    assert by[2]["reward"] == 0.0 and by[2]["reward_pass_rate"] is None  # wholly unparsable: 0
    # only row 0 has a valid pass_rate: MAE |2/4 - 2/4| = 0; no prediction is wholly valid
    assert stats["meta_pass_rate_mae"] == 0.0 and stats["meta_parse_rate"] == 0.0


def test_cli_twin_scores_as_the_step_does(scored, tokenizer_dir, tmp_path, capsys):
    # `masa score` runs score_shard on the score step's settings (the branch's algorithm from the config)
    import json

    from masa.cli import main
    from masa.config import load_config
    from masa.runner.settings import algorithm_for

    _, _, _, d = scored
    sets = ["--set", f"algorithm.n_solution={G}", "--set", f"algorithm.n_meta={GM}",
            "--set", f"rollout.max_response_tokens={MAXT}"]
    assert main(["score", "--rollouts", str(d / "rollouts.parquet"), "--model", tokenizer_dir,
                 "--out", str(tmp_path / "cli"), "--branch", "masa", *sets]) == 0
    printed = json.loads(capsys.readouterr().out)
    cfg = load_config("toy", [s for s in sets if s != "--set"])
    direct = score_shard(str(d / "rollouts.parquet"), str(tmp_path / "direct"), tokenizer_path=tokenizer_dir,
                         algo=algorithm_for(cfg, "masa"), max_response_tokens=MAXT, verifier_workers=0)
    assert printed == json.loads(json.dumps(direct, default=str))
    assert pq.read_table(tmp_path / "cli" / "scored.parquet").equals(pq.read_table(tmp_path / "direct" / "scored.parquet"))
    assert main(["score", "--rollouts", str(tmp_path / "missing.parquet"), "--model", tokenizer_dir,
                 "--out", str(tmp_path / "o")]) == 2


def test_score_step_picks_no_experts_past_expert_rounds(scored, tokenizer_dir, tmp_path):
    # `algorithm.expert.rounds` takes effect in the score step (algorithm_for with the round): the shard
    # above, scored by the step as round 0 and as round 1 of a run with expert.rounds=1, gives its two
    # experts (test_experts) in round 0 and none in round 1.
    from masa.config import load_config
    from masa.runner.layout import Pointer, write_pointer
    from masa.steps.score import score_step
    from masa.storage import open_store, put_dir_atomic

    _, _, _, d = scored
    store = str(tmp_path / "store")
    shard = tmp_path / "shard"
    shard.mkdir()
    (shard / "rollouts.parquet").write_bytes((d / "rollouts.parquet").read_bytes())
    put_dir_atomic(open_store(store), str(shard), "r/rollouts")
    put_dir_atomic(open_store(store), tokenizer_dir, "m/checkpoint")
    write_pointer(tmp_path / "r.json", Pointer(store=store, prefix="r/rollouts", kind="rollouts"))
    write_pointer(tmp_path / "m.json", Pointer(store=store, prefix="m/checkpoint", kind="checkpoint"))
    cfg = load_config("toy", [f"algorithm.n_solution={G}", f"algorithm.n_meta={GM}", f"store={store}",
                              f"rollout.max_response_tokens={MAXT}", "algorithm.expert.rounds=1"])
    n_experts = [score_step(cfg, branch="masa", round_idx=r, rollouts_ptr=str(tmp_path / "r.json"),
                            policy_ptr=str(tmp_path / "m.json"), history_path=None,
                            out_ptr=str(tmp_path / f"s{r}.json"), history_out=str(tmp_path / f"h{r}.json"))["n_experts"]
                 for r in (0, 1)]
    assert n_experts == [2, 0]
    # the step's history record carries what the next rollout step's gating switch reads (steps/rollout.py)
    import json
    record = json.loads((tmp_path / "h1.json").read_text())[-1]
    assert (record["meta_gate_mixed"], record["meta_mixed"], record["gated_prompts"]) == (0, 1, 1)


def test_cutoff_switch_evidence_from_the_rollouts_own_predictions(tmp_path, tokenizer_dir):
    # The rollout step's parse of the meta rows (their meta_solution_length column) gives each prompt the
    # budget cutoff would set; here multiplier 1, min_tokens 1. Prompt 0: one valid prediction, 4 -> budget
    # 4; its passing solutions are 3 and 5 tokens long (s3, correct but cut, scores 0), so 1 of 2 would be
    # cut. Prompt 1: predictions 2 and 60, median 31 -> budget 31; its 4 passing solutions of 2 tokens: none.
    # The gated prompt 2 has no solution. Evidence (1, 6).
    def score(budget_of_prompt1):
        build_shard(tmp_path / "rollouts.parquet")
        rows = pq.read_table(tmp_path / "rollouts.parquet").to_pylist()
        lengths = {(0, 0): 4, (5, 0): 2, (5, 1): 60, (7, 0): 2, (7, 1): 60}
        for r in rows:
            if r["path"] == "meta":
                r["meta_solution_length"] = lengths.get((r["group_id"], r["sample_idx"]))
            elif r["group_id"] == 5:
                r["max_tokens"] = budget_of_prompt1
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp_path / "rollouts.parquet")
        algo = AlgorithmConfig(name="masa-efficient", n_solution=G, n_meta=GM,
                               cutoff=CutoffConfig(multiplier=1.0, min_tokens=1))
        return score_shard(str(tmp_path / "rollouts.parquet"), str(tmp_path / "out"), tokenizer_path=tokenizer_dir,
                           algo=algo, max_response_tokens=MAXT, verifier_workers=0)

    stats = score(MAXT)
    assert (stats["cutoff_would_cut"], stats["cutoff_passing"]) == (1, 6)
    # prompt 1's solutions ran under its budget (max_tokens 31 < the cap 64): cutoff acted there, so it
    # says nothing of what cutoff would cut, and only prompt 0 counts: (1, 2)
    stats = score(31)
    assert (stats["cutoff_would_cut"], stats["cutoff_passing"]) == (1, 2)


def test_no_cutoff_evidence_without_masa_efficient(scored):
    stats, _, _, _ = scored  # algorithm masa: no cutoff to judge
    assert (stats["cutoff_would_cut"], stats["cutoff_passing"]) == (None, None)
