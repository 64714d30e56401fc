"""The meta path's text contract: prompt, canonical completion, tolerant parser and value rewrite."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.meta import (
    MAX_PARSE_CHARS,
    MetaParseFailure,
    MetaPrediction,
    extract_meta_reasoning,
    format_meta_completion,
    parse_meta,
    render_meta_prompt,
    replace_meta_values,
)

G, MAXT = 8, 512


def parse(text: str) -> MetaPrediction | MetaParseFailure:
    return parse_meta(text, n_solution=G, max_response_tokens=MAXT)


def test_prompt_is_short_ascii_and_states_ranges():
    p = render_meta_prompt("Find x if 2x = 4.", n_solution=G, max_response_tokens=MAXT)
    assert p.isascii() and len(p) < 600
    assert "<meta>" in p and "</meta>" in p
    assert "pass_rate (integer 0 to 8)" in p and "solution_length (integer 1 to 512)" in p
    assert p.endswith("Problem: Find x if 2x = 4.")
    with pytest.raises(ValueError, match="n_solution"):
        render_meta_prompt("x", n_solution=0, max_response_tokens=MAXT)


def test_canonical_completion_format_and_roundtrip():
    t = format_meta_completion("think", notions=["fraction", "\\frac"], pass_rate=3, solution_length=40)
    assert t == '<meta>think</meta>\n{"math_notion": ["fraction", "\\\\frac"], "pass_rate": 3, "solution_length": 40}'
    assert parse(t) == MetaPrediction(notions=("fraction", "\\frac"), pass_rate=3, solution_length=40)
    assert extract_meta_reasoning(t) == "think"


@pytest.mark.parametrize("bad", [dict(pass_rate=-1), dict(solution_length=0), dict(pass_rate=True),
                                 dict(notions="a, b"), dict(reasoning="x</meta>")])
def test_canonical_completion_rejects_bad_values(bad):
    kw = dict(reasoning="r", notions=["a"], pass_rate=1, solution_length=1) | bad
    with pytest.raises(ValueError):
        format_meta_completion(kw.pop("reasoning"), **kw)


@pytest.mark.parametrize("text, expected", [
    # code fence around the object
    ('<meta>r</meta>\n```json\n{"math_notion": ["a"], "pass_rate": 2, "solution_length": 9}\n```',
     MetaPrediction(("a",), 2, 9)),
    # Python-dict form: single quotes, trailing comma, True/None elsewhere ignored
    ("{'math_notion': ['prime number'], 'pass_rate': 8, 'solution_length': 512, 'x': None, 'y': True,}",
     MetaPrediction(("prime number",), 8, 512)),
    # comma-separated notion string, numbers as strings, integral float
    ('{"math_notion": "modular arithmetic, parity ,", "pass_rate": "5", "solution_length": 7.0}',
     MetaPrediction(("modular arithmetic", "parity"), 5, 7)),
    # bare keys
    ('{math_notion: [], pass_rate: 0, solution_length: 1}', MetaPrediction((), 0, 1)),
    # the LAST object wins; braces of LaTeX and prose apostrophes before it are ignored
    ("<meta>it's \\frac{1}{2}; {'math_notion': ['a'], 'pass_rate': 1, 'solution_length': 2}</meta>\n"
     '{"math_notion": ["b"], "pass_rate": 3, "solution_length": 4}', MetaPrediction(("b",), 3, 4)),
    # braces inside strings do not end the object; LaTeX escapes stay literal
    ('{"math_notion": ["\\binom{n}{k}"], "pass_rate": 1, "solution_length": 2}',
     MetaPrediction(("\\binom{n}{k}",), 1, 2)),
])
def test_parse_tolerates_common_forms(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("", "no JSON object"),
    ("<meta>no json here</meta>", "no JSON object"),
    ('{"math_notion": [], "pass_rate": 3}', "missing key solution_length"),
    ('{"math_notion": [], "pass_rate": 9, "solution_length": 3}', "pass_rate out of range 0..8: 9"),
    ('{"math_notion": [], "pass_rate": -1, "solution_length": 3}', "pass_rate out of range 0..8: -1"),
    ('{"math_notion": [], "pass_rate": 1, "solution_length": 513}', "solution_length out of range 1..512: 513"),
    ('{"math_notion": [], "pass_rate": 1, "solution_length": 0}', "solution_length out of range 1..512: 0"),
    ('{"math_notion": [], "pass_rate": 3.5, "solution_length": 3}', "pass_rate is not an integer: 3.5"),
    ('{"math_notion": [], "pass_rate": "many", "solution_length": 3}', "pass_rate is not a number: 'many'"),
    ('{"math_notion": [], "pass_rate": true, "solution_length": 3}', "pass_rate is not a number: True"),
    ('{"math_notion": [], "pass_rate": 1e999, "solution_length": 3}', "pass_rate is not an integer: inf"),
    ('{"math_notion": [1, 2], "pass_rate": 1, "solution_length": 3}', "math_notion must be a list of strings: [1, 2]"),
])
def test_parse_failures_are_typed_with_reasons(text, reason):
    assert parse(text) == MetaParseFailure(reason)


def test_parse_caps_length_and_keeps_the_tail():
    obj = '{"math_notion": [], "pass_rate": 1, "solution_length": 2}'
    assert parse("x{" * MAX_PARSE_CHARS + obj) == MetaPrediction((), 1, 2)
    # an object that starts before the cap is not seen
    assert parse(obj + " " * MAX_PARSE_CHARS) == MetaParseFailure("no JSON object")
    huge = '{"math_notion": [], "pass_rate": "' + "9" * 5000 + '", "solution_length": 3}'
    assert isinstance(parse(huge), MetaParseFailure)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("{}[]:,'\"\\ aeu019.-TrNn\n")) | st.characters(), max_size=300))
def test_parse_never_raises(text):
    r = parse(text)
    assert isinstance(r, MetaPrediction | MetaParseFailure)
    if isinstance(r, MetaPrediction):
        assert 0 <= r.pass_rate <= G and 1 <= r.solution_length <= MAXT


@settings(max_examples=100, deadline=None)
@given(reasoning=st.text(alphabet=st.characters(codec="ascii"), max_size=80).filter(lambda r: "</meta>" not in r),
       notions=st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12).map(str.strip).filter(bool)
                        .filter(lambda n: "," not in n), max_size=4),
       k=st.integers(0, G), n=st.integers(1, MAXT))
def test_format_parse_roundtrip(reasoning, notions, k, n):
    t = format_meta_completion(reasoning, notions=notions, pass_rate=k, solution_length=n)
    assert parse(t) == MetaPrediction(tuple(notions), k, n)


def test_replace_values_keeps_reasoning_notions_and_surroundings():
    text = "<meta>think {hard}</meta>\n```json\n{'math_notion': 'a, b', 'pass_rate': 8, 'solution_length': 99}\n```"
    out = replace_meta_values(text, pass_rate=3, solution_length=41)
    assert out == ('<meta>think {hard}</meta>\n```json\n'
                   '{"math_notion": ["a", "b"], "pass_rate": 3, "solution_length": 41}\n```')
    assert parse(out) == MetaPrediction(("a", "b"), 3, 41)


def test_replace_values_builds_canonical_when_no_object():
    assert replace_meta_values("<meta>why</meta> oops", pass_rate=2, solution_length=5) == (
        '<meta>why</meta>\n{"math_notion": [], "pass_rate": 2, "solution_length": 5}')
    out = replace_meta_values("just prose", pass_rate=0, solution_length=1)
    assert extract_meta_reasoning(out) == "just prose"
    assert json.loads(out.split("\n", 1)[1]) == {"math_notion": [], "pass_rate": 0, "solution_length": 1}


def test_latex_commands_survive_unescaped_and_escaped():
    # "\theta" written sloppily (plain JSON would read a tab + "heta") and "\\frac" written properly
    # both mean LaTeX; "\n" before a non-letter ("\n2") is still JSON's newline escape.
    text = '{"math_notion": ["\\theta", "\\\\frac", "x\\n2"], "pass_rate": 1, "solution_length": 2}'
    assert parse(text).notions == ("\\theta", "\\frac", "x\n2")


def test_meta_value_spans_point_at_the_written_digits():
    from masa.algo.meta import meta_value_spans

    t = format_meta_completion("A 2-digit addition.", notions=["addition"], pass_rate=5, solution_length=57)
    assert [t[a:b] for a, b in meta_value_spans(t)] == ["5", "57"]
    # a JSON object earlier in the reasoning is not the one read; no object, no spans
    t2 = '<meta>like {"pass_rate": 1}</meta>\n' + t.split("\n", 1)[1]
    assert [t2[a:b] for a, b in meta_value_spans(t2)] == ["5", "57"]
    assert meta_value_spans("<meta>no json</meta>") == ()


def test_meta_field_spans_cover_each_value():
    from masa.algo.meta import meta_field_spans

    t = format_meta_completion("A 2-digit addition.", notions=["addition", "carry"], pass_rate=5, solution_length=57)
    spans = meta_field_spans(t)
    assert {k: t[a:b] for k, (a, b) in spans.items()} == {
        "math_notion": '["addition", "carry"]', "pass_rate": "5", "solution_length": "57"}
    # a notion string, a quoted pass_rate (no span: not plain digits) and a repeated key (the last counts)
    t2 = '<meta>x</meta>{"math_notion": "sums", "pass_rate": "3", "solution_length": 9, "solution_length": 12}'
    assert {k: t2[a:b] for k, (a, b) in meta_field_spans(t2).items()} == {"math_notion": '"sums"',
                                                                           "solution_length": "12"}
    assert meta_field_spans("<meta>no json</meta>") == {}


def test_parse_meta_fields_keeps_the_valid_fields():
    # issue 14 item 4: one bad field no longer fails the whole prediction (the reward scores per field)
    from masa.algo.meta import MetaFields, parse_meta_fields

    text = '<meta>r</meta> {"math_notion": ["sum"], "pass_rate": 99, "solution_length": 10}'
    f = parse_meta_fields(text, n_solution=8, max_response_tokens=64)
    assert f == MetaFields(("sum",), None, 10, ("pass_rate out of range 0..8: 99",))
    assert not f.complete
    assert parse_meta(text, n_solution=8, max_response_tokens=64).reason == "pass_rate out of range 0..8: 99"
    f = parse_meta_fields('{"pass_rate": 3}', n_solution=8, max_response_tokens=64)
    assert f == MetaFields(None, 3, None, ("missing key math_notion", "missing key solution_length"))
    assert parse_meta_fields('{"pass_rate": 30}', n_solution=8, max_response_tokens=64).reason == \
        "missing key math_notion; pass_rate out of range 0..8: 30; missing key solution_length"
    assert parse_meta_fields("none", n_solution=8, max_response_tokens=64).reason == "no JSON object"
