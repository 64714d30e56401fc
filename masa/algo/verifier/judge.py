"""In-process judging: `is_equivalent(pred, gold)` and `verify(response, answer) -> Verdict`.

A pair is judged in this order: plain integers (fast path, the toy task's answers); equal canonical
strings (presentation stripped: `\\text`, spacing, `\\left`, `\\dfrac`, degree/percent/dollar signs);
else both sides are cleaned, tokenised and parsed (`lexer`, `parser`; nothing is ever evaluated as
code) and compared with `compare.equivalent`.  These functions have no time limit: untrusted model
output goes through `verify_batch`, which runs them in killable worker processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from masa.algo.verifier.compare import equivalent
from masa.algo.verifier.extract import extract_answer
from masa.algo.verifier.lexer import VerifierLimit, VerifierSyntaxError, clean, tokenize
from masa.algo.verifier.parser import parse


@dataclass(frozen=True)
class Verdict:
    """How one response was judged: `error` says why it could not be judged (then correct is False)."""

    correct: bool
    extracted: str | None
    error: str | None = None


_INTEGER = re.compile(r"[+-]?\d{1,30}")
_CANON_DROP = re.compile(
    r"(\\\\)|\\(?:text|textbf|textrm|textit|textnormal|mbox|mathrm|mathbf|displaystyle)(?![a-zA-Z])"
    r"|\\(?:left|right)(?![a-zA-Z])|\\[,;:! ]|\\q?quad(?![a-zA-Z])|\$|\s+|\^\{?\\circ\}?|\\%|%"
)


def canonical_string(s: str) -> str:
    """Presentation-free spelling used for the string-equality shortcut (`\\text{(B)}` -> `B`)."""
    s = _CANON_DROP.sub(lambda m: m.group(1) or "", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.rstrip(".")
    while len(s) >= 2 and s[0] == "{" and s[-1] == "}" and _balanced(s[1:-1]):
        s = s[1:-1]
    if re.fullmatch(r"\([A-Za-z]\)", s):
        s = s[1]
    return s


def _balanced(s: str) -> bool:
    depth = 0
    for c in s:
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return False
    return depth == 0


def to_ast(answer: str, separators: bool = True) -> tuple:
    """Parse one answer string; raises VerifierSyntaxError / VerifierLimit."""
    return parse(tokenize(clean(answer), separators))


# A digit group that could also be read as a list item: `45,135` (but not `15,000`: nobody writes 0 as 000).
_AMBIGUOUS_GROUP = re.compile(r"\d,[1-9]\d{2}(?!\d)")
_ZERO_GROUP = re.compile(r"\d,0\d{2}(?!\d)")


def judge(pred: str, gold: str) -> tuple[bool, str | None]:
    """(correct, error) for a predicted answer against the reference answer."""
    if not gold.strip():
        return False, "empty reference answer"
    if not pred.strip():
        return False, None
    if _INTEGER.fullmatch(pred) and _INTEGER.fullmatch(gold):
        return int(pred) == int(gold), None
    if canonical_string(pred) == canonical_string(gold):
        return True, None
    correct, error = _judge_parsed(pred, gold, separators=True)
    if not correct and _list_reading_plausible(pred, gold):
        # `45,135` is 45135 or the list 45, 135: either reading, applied to both sides alike, may match.
        correct, other_error = _judge_parsed(pred, gold, separators=False)
        error = None if correct else error or other_error
    return correct, error


def _list_reading_plausible(pred: str, gold: str) -> bool:
    both = pred + " " + gold
    return bool(_AMBIGUOUS_GROUP.search(both)) and not _ZERO_GROUP.search(both)


def _judge_parsed(pred: str, gold: str, separators: bool) -> tuple[bool, str | None]:
    try:
        gold_ast = to_ast(gold, separators)
    except (VerifierSyntaxError, VerifierLimit) as e:
        return False, f"cannot parse reference answer: {e}"
    try:
        return equivalent(to_ast(pred, separators), gold_ast), None
    except VerifierSyntaxError:
        return False, None  # an answer we cannot read is a wrong answer, not a failure to judge
    except (VerifierLimit, RecursionError) as e:
        return False, f"limit: {e or 'recursion'}"
    except Exception as e:  # noqa: BLE001 - untrusted input must never crash the caller; the error says why
        return False, f"internal error: {type(e).__name__}: {e}"


def is_equivalent(pred: str, gold: str) -> bool:
    """Whether two short trusted answer strings are mathematically equal (no time limit)."""
    return judge(pred, gold)[0]


def verify(response: str, answer: str) -> Verdict:
    """Judge a whole model response against the reference answer, in process, without time limit."""
    extracted = extract_answer(response)
    if extracted is None:
        return Verdict(False, None, None)
    correct, error = judge(extracted, answer)
    return Verdict(correct, extracted, error)
