"""Take the final answer out of a model response.

The answer is the content of the LAST `\\boxed{...}` or `\\fbox{...}` (nested braces matched, escaped
`\\{`/`\\}` skipped; `\\boxed 5` takes the next word).  A response whose last box never closes (a cut-off
generation) has no answer: we do not fall back to an earlier box, which would reward an intermediate
result.  Only a response with no box at all falls back to a final `Answer: ...` line, then to the last
"the answer is ...".  The scan is linear in the response length.
"""

from __future__ import annotations

import re

from masa.algo.verifier.lexer import group_end

FALLBACK_WINDOW = 4000  # fallbacks look only at the end of the response
_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_ANSWER_LINE = re.compile(r"^\W*(?:final\s+)?answer\W*?[:：][\s*_]*(.+?)\s*$", re.IGNORECASE)  # **Answer:** 5
_ANSWER_IS = re.compile(r"answer\s+is\s*[:：]?\s*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE | re.DOTALL)
_MATH_DELIMS = re.compile(r"^(?:\$\$|\$|\\\(|\\\[)(.*?)(?:\$\$|\$|\\\)|\\\])$", re.DOTALL)


def last_boxed(response: str) -> str | None:
    """Content of the last `\\boxed`/`\\fbox`; None when there is none, it is empty or unclosed."""
    last = None
    for last in _BOX.finditer(response):  # noqa: B007 - we want the last match
        pass
    if last is None:
        return None
    i = last.end()
    while i < len(response) and response[i] == " ":
        i += 1
    if i < len(response) and response[i] == "{":
        end = group_end(response, i)
        return response[i + 1 : end].strip() or None if end is not None else None
    m = re.compile(r"[^\s$]+").match(response, i)  # \boxed 5
    return m.group(0) if m else None


def _strip_math(s: str) -> str:
    s = s.strip().rstrip(".").strip()
    m = _MATH_DELIMS.match(s)
    return (m.group(1) if m else s).strip()


def fallback_answer(response: str) -> str | None:
    """`Answer: X` on the last non-empty line, else the last `the answer is X`."""
    tail = response[-FALLBACK_WINDOW:]
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if lines:
        m = _ANSWER_LINE.match(lines[-1])
        if m and (ans := _strip_math(m.group(1))):
            return ans
    found = None
    for found in _ANSWER_IS.finditer(tail):  # noqa: B007 - we want the last match
        pass
    if found is not None and (ans := _strip_math(found.group(1))):
        return ans
    return None


def extract_answer(response: str) -> str | None:
    """The final answer written in `response`, or None (see module docstring for the rules)."""
    if _BOX.search(response):
        return last_boxed(response)
    return fallback_answer(response)
