"""verify_batch: killable workers, per-item time limit, pathological and hostile inputs, never raising."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import masa.algo.verifier.pool as pool
from masa.algo.verifier import Verdict, verify, verify_batch

PATHOLOGICAL = [
    r"\boxed{2^{2^{2^{2^{2^{2}}}}}}",  # power tower: exponent limit, not a 2^65536-digit number
    r"\boxed{(10^{100})!}",  # factorial limit
    r"\boxed{9^{9^{9^9}}}",
    r"\boxed{" + "{" * 3000 + "1" + "}" * 3000 + "}",  # 3,000 nested braces: depth limit
    r"\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}",
    r"\boxed{" + "-" * 3000 + "1}",
    r"\boxed{" + r"\sqrt{" * 1000 + "2" + "}" * 1000 + "}",
    "x" * 2_000_000 + r"\boxed{4}",  # 2 MB response: the answer is still found, and it is wrong
    "the answer is " + "1+" * 1_000_000,
    r"\boxed{\frac{1}{2}" + "{" * 100,  # unclosed braces
    r"\boxed{{{{",
    "",
    r"\boxed{" + ",".join(["x"] * 700) + "}",
]


def test_pathological_inputs_return_false_within_the_limit():
    start = time.monotonic()
    verdicts = verify_batch([(r, "3") for r in PATHOLOGICAL], timeout_s=5.0, workers=2)
    assert len(verdicts) == len(PATHOLOGICAL)
    assert all(isinstance(v, Verdict) and v.correct is False for v in verdicts)
    assert time.monotonic() - start < 60  # hang guard only: every item has its own 5 s limit


def test_large_response_with_correct_answer_is_found():
    [v] = verify_batch([("y" * 2_000_000 + r" so \boxed{\frac{6}{2}}", "3")], workers=1)
    assert v == Verdict(True, r"\frac{6}{2}", None)


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch {marker}')",
        r"\boxed{__import__('os').system('touch {marker}')}",
        r"\boxed{exec(\"open('{marker}','w')\")}",
        r"\boxed{\input{/etc/passwd}} \boxed{\write18{touch {marker}}}",
        "Answer: eval(compile('open(\"{marker}\",\"w\")','x','exec'))",
    ],
)
def test_code_injection_has_no_effect(payload, tmp_path):
    marker = tmp_path / "pwned"
    response = payload.replace("{marker}", str(marker))
    verdicts = verify_batch([(response, "0"), (response, str(marker))], workers=1) + [verify(response, "0")]
    assert all(not v.correct for v in verdicts)
    assert not marker.exists()


def _hang_on_marker(response: str, answer: str) -> Verdict:
    if response == "HANG":
        time.sleep(3600)
    if response == "DIE":
        os._exit(3)  # a worker crash (e.g. the OOM killer), not an exception
    return verify(response, answer)


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the hook reaches workers by fork")
def test_hanging_worker_is_killed_and_the_rest_is_judged(monkeypatch):
    # Forked workers inherit the patched module global, so one real worker process really hangs.
    # The limit is generous because it also covers a fresh worker's start on a loaded machine.
    monkeypatch.setattr(pool, "verify", _hang_on_marker)
    pairs = [(r"\boxed{\frac12}", "0.5"), ("HANG", "x"), (r"\boxed{x+1}", "1+x"), ("HANG", "y")]
    pairs += [(rf"\boxed{{{k}/1}}", str(k)) for k in range(20)]
    start = time.monotonic()
    verdicts = verify_batch(pairs, timeout_s=2.0, workers=2, start_method="fork")
    assert time.monotonic() - start < 30  # hang guard
    assert verdicts[1] == Verdict(False, None, "timeout") and verdicts[3] == Verdict(False, None, "timeout")
    assert [v.correct for k, v in enumerate(verdicts) if k not in (1, 3)] == [True] * 22


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the hook reaches workers by fork")
def test_a_dead_worker_is_replaced_and_the_rest_is_judged(monkeypatch):
    monkeypatch.setattr(pool, "verify", _hang_on_marker)
    pairs = [("DIE", "x"), (r"\boxed{x^2}", "x\\cdot x"), ("DIE", "y"), (r"\boxed{(1,2)}", "(1,2)")]
    verdicts = verify_batch(pairs, timeout_s=5.0, workers=1, start_method="fork")
    assert verdicts[0] == verdicts[2] == Verdict(False, None, "worker died")
    assert verdicts[1].correct and verdicts[3].correct


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="the hook reaches workers by fork")
def test_time_limit_works_from_a_non_main_thread(monkeypatch):
    # signal.alarm would fail here: only the main thread may set signal handlers.
    monkeypatch.setattr(pool, "verify", _hang_on_marker)
    result: list = []
    worker = threading.Thread(
        target=lambda: result.extend(verify_batch([("HANG", "x"), (r"\boxed{2x}", "x+x")], timeout_s=2.0, workers=1))
    )
    worker.start()
    worker.join(timeout=30)
    assert result == [Verdict(False, None, "timeout"), Verdict(True, "2x", None)]


def test_batch_matches_in_process_verdicts_and_order():
    pairs = [(rf"\boxed{{\frac{{{k}}}{{2}}}}", f"{k / 2}") for k in range(40)] + [(r"\boxed{7}", "8")] * 3
    assert verify_batch(pairs, workers=2) == verify_batch(pairs, workers=0) == [verify(r, a) for r, a in pairs]


def test_plain_integer_fast_path_starts_no_worker(monkeypatch):
    monkeypatch.setattr(pool, "_Worker", None)  # any worker start would raise TypeError
    verdicts = verify_batch([(r"so \boxed{12}", "12"), ("Answer: 7", "8"), ("nothing", "1")])
    assert verdicts == [Verdict(True, "12", None), Verdict(False, "7", None), Verdict(False, None, None)]


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="timeout_s"):
        verify_batch([], timeout_s=0)
    with pytest.raises(ValueError, match="workers"):
        verify_batch([], workers=-1)
    assert verify_batch([]) == []
    with pytest.raises(TypeError, match=r"pairs\[1\] must be a \(response: str, answer: str\) pair"):
        verify_batch([("a", "1"), ("b", 2)])


LATEXISH = st.lists(st.sampled_from(list("0123456789+-*/^_{}()[],.=<>!|&\\ xyabe") + [
    r"\frac", r"\sqrt", r"\boxed{", r"\pi", r"\infty", r"\pm", r"\{", r"\}", r"\\", r"\text{", r"\begin{pmatrix}",
    r"\end{pmatrix}", r"\cdot", r"\left(", r"\right)", "^\\circ", r"\%", r"\$", "1,000", r"\overline{",
    "^{1/2}", "^{-2/3}", "^{0.5}", r"\sqrt[3]{", r"\sin", r"\log_", r"\binom", r"\cup", r"\le", "i", "&"]), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(response=st.one_of(st.text(max_size=200), LATEXISH), answer=st.one_of(st.text(max_size=30), LATEXISH))
def test_random_text_never_raises(response, answer):
    v = verify(response, answer)
    assert isinstance(v.correct, bool)
    assert v.extracted is None or isinstance(v.extracted, str)
    assert v.error is None or isinstance(v.error, str)


@settings(max_examples=200, deadline=None)
@given(answer=LATEXISH)
def test_an_answer_readable_by_us_equals_itself(answer):
    v = verify(rf"\boxed{{{answer}}}", answer)
    if v.extracted == answer.strip() and v.error is None:
        assert v.correct
