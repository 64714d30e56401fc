"""Hand-built cases for the answer verifier: extraction, each equivalence class (both ways), exactness."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masa.algo.verifier import Verdict, extract_answer, is_equivalent, verify
from masa.algo.verifier.compare import equivalent
from masa.algo.verifier.evaluate import exact
from masa.algo.verifier.judge import to_ast

# (prediction, reference) pairs that must be judged equal, each checked in both directions.
EQUAL = [
    # fractions and decimals
    (r"\frac{1}{2}", "0.5"), (r"\dfrac{1}{2}", "1/2"), (r"\tfrac12", r"\frac{1}{2}"), (r"\frac12", "0.50"),
    (r"-\frac{7}{9}", r"\frac{-7}{9}"), (r"\frac{625}4", "156.25"), (r"3\frac{1}{2}", r"\frac72"),
    (r"0.\overline{3}", r"\frac13"), (r"0.1\overline{36}", r"\frac{3}{22}"), (".5", r"\frac{1}{2}"),
    # equations against values
    ("x = 3", "3"), ("y=2x+3", "2x+3"), ("f(x)=x^2", "x^2"), (r"x\in[-2,7]", "[-2,7]"), ("x=3", "3=x"),
    (r"y = -\frac12 x + 3", "y=3-x/2"), (r"x\ge 2", r"x \geq 2"), ("x>2", "2<x"),
    # tuples, intervals, sets, lists, matrices
    ("(1,2)", "(1, 2)"), ("[1,2)", "[1,2)"), (r"\{1,2\}", r"\{2,1\}"), ("1,2,3", "3,2,1"),
    (r"(-\infty, 3]", r"(-\infty,3]"), (r"(-\infty,0)\cup(1,\infty)", r"(1,\infty)\cup(-\infty,0)"),
    (r"\left(\frac{1}{2},3\right)", "(0.5,3)"), (r"\{\}", r"\emptyset"), (r"\{1,2\}", "1, 2"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{bmatrix}1&2\\3&4\end{bmatrix}"),
    (r"\begin{pmatrix}1\\3\end{pmatrix}", "(1,3)"),
    (r"\begin{pmatrix} -4\\-3 \end{pmatrix}", r"\begin{pmatrix}-4\-3\end{pmatrix}"),  # MATH's lost backslash
    (r"1\pm\sqrt{2}", r"1+\sqrt2, 1-\sqrt2"), (r"\{1\pm\sqrt{5},-2\}", r"\{-2, 1+\sqrt5, 1-\sqrt5\}"),
    # units, signs, separators, text
    (r"30^\circ", "30"), (r"30^{\circ}", "30"), (r"\cos 60^\circ", "0.5"), (r"2\sin(30^{\circ})", "1"), (r"\$5", "5"), (r"5\text{ cm}", "5"), (r"440\text{ cm}^2", "440"),
    (r"65 \text{ children tickets}", "65"), ("50\\%", "50"), ("1,000", "1000"), (r"1,\!000", "1000"),
    (r"8{,}880", "8880"), (r"\$1,\!000.50", "1000.5"), ("10,236", "10236"), (r"1{,}000{,}000", "10^6"),
    (r"11,\! 111,\! 100", "11111100"), ("135, 45", "45,135"),  # `45,135` may be a list: both readings tried
    (r"\frac{3}{4} \text{ of the pie}", r"\frac34"), (r"\text{5 dollars}", "5"), (r"1\frac{1}{2}\text{ cups}", "1.5"),
    (r"\mathbb{R}", r"(-\infty,\infty)"), (r"x=2 \text{ or } x=3", "3,2"),
    (r"2, 3, \text{ and } 4", "4,3,2"), (r"-2 \text{ or } -12", "-12,-2"), (r"\text{A,D}", "{A,D}"),
    (r"\text{(B)}", "B"), ("(B)", "B"), (r"\text{ (C) }", "C"), (r"\mathrm{C}", "C"), (r"\text{odd}", "odd"),
    (r"\text{Evelyn}", "{Evelyn}"), ("-221_3", "-221_3"),
    # radicals, constants, operators, implicit multiplication
    (r"\sqrt{8}", r"2\sqrt{2}"), (r"\sqrt2/2", r"\frac{\sqrt{2}}{2}"), (r"4\sqrt{2}", r"\sqrt{32}"),
    (r"\sqrt[3]{-8}", "-2"), (r"2\pi", r"2 \pi"), (r"\frac{9\pi}{2}", r"4.5\pi"), (r"\dfrac{3}{4}\pi", r"\frac{3\pi}{4}"),
    (r"\infty", r"\infty"), ("2^{10}", "1024"), (r"2\cdot 3", "6"), (r"2\times3", "6"), ("2(3)", "6"),
    ("x^{-1}", r"\frac1x"), ("2^-1", "0.5"), ("|{-3}|", "3"), (r"\binom{5}{2}", "10"), ("10!", "3628800"),
    (r"e^{i\pi}", "-1"), (r"\ln e", "1"), ("i^2", "-1"), ("3+4i", "4i+3"), (r"\log_2 8", "3"),
    # symbolic
    ("x^2+2x+1", "(x+1)^2"), (r"\frac{x}{2}", "0.5x"), (r"\pi r^2", r"r^2\pi"), ("a+b", "b+a"), ("5x-3", "-3+5x"),
    (r"\sin^2 x + \cos^2 x", "1"), (r"2\tan x", r"2\tanx"), (r"\frac{x+1}{2}", r"\frac12 x + 0.5"),
    (r"\sqrt{x}", "x^{1/2}"), (r"\frac{1}{s}", "1/s"), (r"\frac{2}{m}", r"2m^{-1}"),  # not units here
    (r"8^{2/3}", "4"), (r"x^{3/2}", r"x\sqrt{x}"),
]

DIFFERENT = [
    (r"\frac{1}{2004!}", r"\frac{1}{2006!}"),  # exact rationals: 1/2004! - 1/2006! != 0 though floats agree
    ("[1,2)", "[1,2]"), ("(1,2)", "(2,1)"), ("(1,2)", "[1,2]"), ("(1,2)", "1,2"), ("1,000", "(1,000)"),
    ("000, 15", "15,000"), ("1, 0", "1,000"),  # a 0-led digit group is never read as a list item
    ("x+y=1", "y=1-x"),  # equations compare side by side, never moved to one side
    ("0.33", r"\frac13"), ("3.14", r"\pi"), (r"\sqrt{2}", "1.414"), ("e", "2.718281828"),
    (r"\frac{1}{3}", "0.3333333333333"), ("x^2", "x^3"), ("2", "3"), ("x", "y"), ("5", "5x"), ("x^2", "|x|^2+1"),
    (r"\text{odd}", r"\text{even}"), ("A", "B"), ("1,2", "1,2,3"), ("1,1,2", "1,2,2"),
    (r"\begin{pmatrix}1&2\\3&4\end{pmatrix}", r"\begin{pmatrix}1&3\\2&4\end{pmatrix}"),
    (r"\infty", r"-\infty"), ("2^{100}", "2^{100}+1"), ("x>2", r"x\ge2"), ("-221_3", "221_3"), ("221_3", "25"),
    (r"1\pm\sqrt2", r"1+\sqrt2"), ("x=3", "y=4"), (r"\{1\pm\sqrt{5},-2\}", r"\{-2, 1+\sqrt5\}"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_equal_answers_are_equivalent_both_ways(pred, gold):
    assert is_equivalent(pred, gold)
    assert is_equivalent(gold, pred)


@pytest.mark.parametrize(("pred", "gold"), DIFFERENT)
def test_different_answers_are_not_equivalent_both_ways(pred, gold):
    assert not is_equivalent(pred, gold)
    assert not is_equivalent(gold, pred)


def test_exact_rationals_are_exact():
    # 1/2004! and 1/2006! are both 0.0 as floats; the exact values differ by the factor 2005*2006.
    a, b = exact(to_ast(r"\frac{1}{2004!}")), exact(to_ast(r"\frac{1}{2006!}"))
    assert a == b * 2005 * 2006 and a != b
    # 3\frac{1}{2} = 3 + 1/2 (a mixed number, not 3 * 1/2); 0.1\overline{36} = 1/10 + 36/990 = 3/22.
    assert exact(to_ast(r"3\frac{1}{2}")) == Fraction(7, 2)
    assert exact(to_ast(r"0.1\overline{36}")) == Fraction(3, 22)
    # \sqrt{8}/\sqrt{2} is irrational on each side, so there is no exact value; \sqrt{16/9} = 4/3 is.
    assert exact(to_ast(r"\sqrt{8}")) is None
    assert exact(to_ast(r"\sqrt{\frac{16}{9}}")) == Fraction(4, 3)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (r"so $\boxed{5}$ and finally $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}"),  # the LAST box
        (r"\boxed{\{1, \{2\}\}}", r"\{1, \{2\}\}"),  # escaped braces do not count
        (r"\boxed{\frac{a}{\sqrt{b^{2}}}}", r"\frac{a}{\sqrt{b^{2}}}"),  # nested braces
        (r"thus \boxed 5$.", "5"),
        (r"\fbox{42}", "42"),
        ("We find x.\nAnswer: $7$", "7"),
        ("**Answer:** $12$", "12"),
        ("Therefore the answer is 12. Done.", "12"),
        ("So the final answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
        (r"\boxed{1} then \boxed{2", None),  # last box unclosed (cut off): no answer, no fallback to box 1
        (r"\boxed{}", None),
        ("no answer here", None),
        ("", None),
    ],
)
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_fallback_only_without_box():
    assert extract_answer("the answer is 3, as \\boxed{4} shows") == "4"


def test_verify_reports_extracted_and_no_error():
    assert verify(r"hence $\boxed{\dfrac{9}{7}}$", r"\frac{9}{7}") == Verdict(True, r"\dfrac{9}{7}", None)
    assert verify("I give up", "3") == Verdict(False, None, None)
    v = verify(r"\boxed{3}", "")
    assert not v.correct and v.error == "empty reference answer"


def test_unreadable_prediction_is_wrong_not_an_error():
    assert verify(r"\boxed{\frac{1}{}}", "1") == Verdict(False, r"\frac{1}{}", None)


INTEGER_TEXT = st.builds(
    lambda sign, zeros, n: f"{sign}{'0' * zeros}{n}", st.sampled_from(["", "-", "+"]), st.integers(0, 2),
    st.integers(0, 10**12),
)


@settings(max_examples=300, deadline=None)
@given(a=INTEGER_TEXT, b=INTEGER_TEXT)
def test_integer_fast_path_agrees_with_the_parser(a, b):
    # The fast path (int(a) == int(b)) is a shortcut of the full path, never a different rule.
    assert is_equivalent(a, b) == equivalent(to_ast(a), to_ast(b)) == (int(a) == int(b))


@settings(max_examples=300, deadline=None)
@given(p=st.integers(-50, 50), q=st.integers(1, 50), r=st.integers(-50, 50), s=st.integers(1, 50))
def test_fractions_compare_as_rationals(p, q, r, s):
    # p/q = r/s exactly when p*s = r*q, whichever notation each side uses.
    expected = p * s == r * q
    assert is_equivalent(rf"\frac{{{p}}}{{{q}}}", f"{r}/{s}") == expected
    assert is_equivalent(f"{p}/{q}", rf"\dfrac{{{r}}}{{{s}}}") == expected


ATOMS = st.sampled_from(["x", "2", r"\pi", r"\sqrt{3}", r"\frac{1}{2}", "(x+1)", "y^2", "i", "0.25", "3!"])
EXPRESSIONS = st.lists(st.tuples(st.sampled_from(["+", "-", r"\cdot ", "/", ""]), ATOMS), min_size=1, max_size=5).map(
    lambda parts: "".join(op + atom for op, atom in parts).lstrip(r"+/\cdot ")
)


@settings(max_examples=300, deadline=None)
@given(a=EXPRESSIONS, b=EXPRESSIONS)
def test_equivalence_is_symmetric_and_reflexive(a, b):
    assert is_equivalent(a, a)
    assert is_equivalent(a, b) == is_equivalent(b, a)
