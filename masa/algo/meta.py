"""The meta path's text contract: prompt, canonical completion, tolerant parser, value rewrite.

For every prompt MASA samples, beside the G solution rollouts, meta rollouts that do *not* solve the
problem but reason about it inside ``<meta>...</meta>`` and then emit one JSON object::

    <meta>reasoning</meta>
    {"math_notion": ["..."], "pass_rate": k, "solution_length": n}

``pass_rate`` is an integer 0..G (how many of the G solution attempts will be correct) and
``solution_length`` an integer 1..max_response_tokens. Vanilla GRPO has no such path.

How we differ from the paper's released code (akatigre/MASA-RL):

- Its prompt is long (and asks for 128..max_prompt_length tokens); ours is short, plain ASCII, so a tiny
  toy model with a small vocabulary can learn it, and its ranges follow the run's G and token budget.
- Its extractor is a regex for ``{"math_notion": ...}`` without nested braces, then ``json.loads``;
  a failure silently yields ``{}`` (reward 0 with no reason). We take the *last* balanced object in the
  text, parse it with a small tolerant parser of our own (JSON, or a Python-dict form with single
  quotes and True/False/None, bare keys, trailing commas), and return a typed failure with a reason.
  We never ``eval``/``ast.literal_eval`` model text, and we cap the length parsed (the tail is kept,
  since the object comes last).
- Out-of-range values and non-integral numbers are failures, never clamped: a clamp would reward a
  malformed prediction as if it were the boundary value. Integral floats (``5.0``) and numeric
  strings (``"5"``) are accepted, as models often emit them.
- A backslash followed by two letters inside a string is read as a LaTeX command (``\\frac``,
  ``\\theta``, ``\\nu``, ``\\right``) and kept literally instead of as JSON's form feed / tab /
  newline / carriage return, since models write LaTeX in notions without doubling the backslash.

Pure: stdlib only.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

META_OPEN = "<meta>"
META_CLOSE = "</meta>"
KEYS = ("math_notion", "pass_rate", "solution_length")
# Only the tail is parsed: the object comes last, and a bounded input keeps parsing O(cap).
MAX_PARSE_CHARS = 16_384
_MAX_DEPTH = 16  # nesting limit of the tolerant parser (a meta object needs 2)
_MAX_NUMBER_CHARS = 32  # longer digit runs are rejected (Python's int() has a 4300-digit limit)


@dataclass(frozen=True)
class MetaPrediction:
    """A parsed meta prediction: notions used by a solution, predicted correct count k of G, length."""

    notions: tuple[str, ...]
    pass_rate: int
    solution_length: int


@dataclass(frozen=True)
class MetaParseFailure:
    """Why a meta response could not be parsed (scored 0 by the meta reward)."""

    reason: str


def render_meta_prompt(problem: str, *, n_solution: int, max_response_tokens: int) -> str:
    """User-turn text asking for a meta prediction about `problem` (not a solution).

    `n_solution` is G (the range of pass_rate); `max_response_tokens` bounds solution_length.
    """
    if n_solution < 1 or max_response_tokens < 1:
        raise ValueError(f"n_solution and max_response_tokens must be >= 1, got {n_solution}, "
                         f"{max_response_tokens}")
    return (
        "Do not solve this problem. Think about it inside <meta> and </meta>: which math notions a "
        f"solution needs, how many of {n_solution} attempts will be correct, and how many tokens a "
        "solution takes. Then give a JSON object with keys math_notion (list of strings, not words "
        f"from the problem), pass_rate (integer 0 to {n_solution}) and solution_length (integer 1 to "
        f"{max_response_tokens}).\n\nProblem: {problem}"
    )


def _check_values(notions: Sequence[str], pass_rate: int, solution_length: int) -> None:
    if isinstance(notions, str) or not all(isinstance(n, str) for n in notions):
        raise ValueError(f"notions must be a sequence of strings, got {notions!r}")
    for name, v, lo in (("pass_rate", pass_rate, 0), ("solution_length", solution_length, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")


def _canonical_json(notions: Sequence[str], pass_rate: int, solution_length: int) -> str:
    return json.dumps({"math_notion": list(notions), "pass_rate": pass_rate,
                       "solution_length": solution_length})


def format_meta_completion(reasoning: str, *, notions: Sequence[str], pass_rate: int,
                           solution_length: int) -> str:
    """Canonical meta completion: ``<meta>reasoning</meta>\\n{"math_notion": [...], ...}``.

    Used for warm-start examples and expert (behaviour-cloning) targets; `parse_meta` inverts it.
    """
    if META_CLOSE in reasoning:
        raise ValueError(f"reasoning must not contain {META_CLOSE!r}")
    _check_values(notions, pass_rate, solution_length)
    return f"{META_OPEN}{reasoning}{META_CLOSE}\n{_canonical_json(notions, pass_rate, solution_length)}"


def extract_meta_reasoning(text: str) -> str:
    """The text between the last ``<meta>`` and the following ``</meta>`` (stripped; "" if absent)."""
    start = text.rfind(META_OPEN)
    if start < 0:
        return ""
    end = text.find(META_CLOSE, start)
    return text[start + len(META_OPEN): end if end >= 0 else len(text)].strip()


# ---------------------------------------------------------------- tolerant object parser


class _Bad(Exception):
    pass


_LITERALS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class _Parser:
    """Recursive descent over JSON-ish text: JSON plus single quotes, Python literals, bare keys,
    trailing commas. Raises _Bad on anything else."""

    def __init__(self, s: str) -> None:
        self.s, self.i = s, 0

    def ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def peek(self) -> str:
        self.ws()
        return self.s[self.i] if self.i < len(self.s) else ""

    def value(self, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise _Bad("too deeply nested")
        c = self.peek()
        if c == "{":
            return self.obj(depth + 1)
        if c == "[":
            return self.arr(depth + 1)
        if c in "\"'":
            return self.string()
        m = _NUMBER.match(self.s, self.i)
        if m:
            return self.number(m)
        m = _BARE.match(self.s, self.i)
        if m and m.group() in _LITERALS:
            self.i = m.end()
            return _LITERALS[m.group()]
        raise _Bad(f"unexpected {c!r}")

    def number(self, m: re.Match) -> int | float:
        tok, self.i = m.group(), m.end()
        if len(tok) > _MAX_NUMBER_CHARS:
            raise _Bad("number too long")
        return float(tok) if any(ch in tok for ch in ".eE") else int(tok)

    def string(self) -> str:
        quote, self.i, out = self.s[self.i], self.i + 1, []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == quote:
                self.i += 1
                return "".join(out)
            if ch == "\\" and self.i + 1 < len(self.s):
                nxt = self.s[self.i + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.s[self.i + 2: self.i + 6]):
                    out.append(chr(int(self.s[self.i + 2: self.i + 6], 16)))
                    self.i += 6
                    continue
                # A backslash before two letters is a LaTeX command (\frac, \theta, \nu, \right), not
                # JSON's \f, \t, \n, \r: keep it literal; so are unknown escapes.
                latex = nxt.isalpha() and self.s[self.i + 2: self.i + 3].isalpha()
                out.append("\\" + nxt if latex or nxt not in _ESCAPES else _ESCAPES[nxt])
                self.i += 2
                continue
            out.append(ch)
            self.i += 1
        raise _Bad("unterminated string")

    def key(self) -> str:
        if self.peek() in "\"'":
            return self.string()
        m = _BARE.match(self.s, self.i)
        if not m:
            raise _Bad("expected a key")
        self.i = m.end()
        return m.group()

    def obj(self, depth: int) -> dict:
        self.i += 1  # '{'
        out: dict = {}
        while self.peek() != "}":
            k = self.key()
            if self.peek() != ":":
                raise _Bad("expected ':'")
            self.i += 1
            out[k] = self.value(depth)
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "}":
                raise _Bad("expected ',' or '}'")
        self.i += 1
        return out

    def arr(self, depth: int) -> list:
        self.i += 1  # '['
        out: list = []
        while self.peek() != "]":
            out.append(self.value(depth))
            if self.peek() == ",":
                self.i += 1
            elif self.peek() != "]":
                raise _Bad("expected ',' or ']'")
        self.i += 1
        return out


def _object_spans(s: str) -> list[tuple[int, int]]:
    """[start, end) of every outermost balanced ``{...}`` in `s`, in order. Unmatched braces (a
    truncated ``\\frac{1``) are ignored rather than hiding what follows. Braces inside quoted strings
    are skipped; a quote opens a string only where a key or value may start (after ``{ [ , :``), so
    prose apostrophes ("x's") do not, and a newline ends a string (JSON strings cannot hold one)."""
    pairs, stack, quote, prev = [], [], "", ""
    i = 0
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote or ch == "\n":
                quote = ""
        elif ch in "\"'" and stack and prev in "{[,:":
            quote = ch
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs.append((stack.pop(), i + 1))
        if not ch.isspace():
            prev = ch
        i += 1
    spans: list[tuple[int, int]] = []
    for start, end in sorted(pairs):  # properly nested: outermost = not inside the previous kept one
        if not spans or start >= spans[-1][1]:
            spans.append((start, end))
    return spans


def _last_object(text: str) -> tuple[dict, int, int] | None:
    """The last top-level span of `text` that parses as an object, with its span."""
    for start, end in reversed(_object_spans(text)):
        p = _Parser(text[start:end])
        try:
            obj = p.value(0)
        except (_Bad, ValueError, OverflowError):
            continue
        if isinstance(obj, dict) and p.peek() == "":
            return obj, start, end
    return None


# ---------------------------------------------------------------- validation


def _show(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _as_int(name: str, v: object, lo: int, hi: int) -> int | str:
    """An integer in lo..hi, or the failure reason."""
    raw = v
    if isinstance(v, str):
        m = _NUMBER.fullmatch(v.strip())
        if not m or len(v) > _MAX_NUMBER_CHARS:
            return f"{name} is not a number: {_show(raw)}"
        v = float(v) if any(ch in v for ch in ".eE") else int(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{name} is not a number: {_show(raw)}"
    if isinstance(v, float):
        if not math.isfinite(v) or v != int(v):
            return f"{name} is not an integer: {_show(raw)}"
        v = int(v)
    if not lo <= v <= hi:
        return f"{name} out of range {lo}..{hi}: {v}"
    return v


def _as_notions(v: object) -> tuple[str, ...] | str:
    """Notions from a list of strings or a comma-separated string, stripped, empties dropped."""
    if isinstance(v, str):
        v = v.strip().strip("[]").split(",")
        v = [n.strip().strip("\"'") for n in v]
    if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
        return f"math_notion must be a list of strings: {_show(v)}"
    return tuple(n.strip() for n in v if n.strip())


@dataclass(frozen=True)
class MetaFields:
    """A meta prediction scored field by field: each value None where it is missing or invalid, with
    the reasons in `errors` (empty when every field is valid)."""

    notions: tuple[str, ...] | None
    pass_rate: int | None
    solution_length: int | None
    errors: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.errors


def parse_meta_fields(text: str, *, n_solution: int,
                      max_response_tokens: int) -> MetaFields | MetaParseFailure:
    """Parse the last JSON(-ish) object of a meta response field by field (as the released
    `meta_cog.compute_score` scores each field that is present and valid).

    A field that is missing or invalid is None, with its reason in `errors`; a response with no object,
    or with no valid field, is a `MetaParseFailure`. Never raises on any string input.
    """
    if not isinstance(text, str):
        return MetaParseFailure(f"not a string: {type(text).__name__}")
    found = _last_object(text[-MAX_PARSE_CHARS:])
    if found is None:
        return MetaParseFailure("no JSON object")
    obj = found[0]
    checks = (("math_notion", _as_notions), ("pass_rate", lambda v: _as_int("pass_rate", v, 0, n_solution)),
              ("solution_length", lambda v: _as_int("solution_length", v, 1, max_response_tokens)))
    values: list[object] = []
    errors: list[str] = []
    for key, conv in checks:
        r = conv(obj[key]) if key in obj else f"missing key {key}"
        values.append(None if isinstance(r, str) else r)
        if isinstance(r, str):
            errors.append(r)
    if all(v is None for v in values):
        return MetaParseFailure("; ".join(errors))
    return MetaFields(*values, errors=tuple(errors))  # type: ignore[arg-type]


def parse_meta(text: str, *, n_solution: int, max_response_tokens: int) -> MetaPrediction | MetaParseFailure:
    """Parse the last JSON(-ish) object of a meta response into a typed prediction, or say why not.

    pass_rate must be an integer in 0..n_solution and solution_length in 1..max_response_tokens; every
    field must be valid (gating, cutoff and evaluation read whole predictions; the meta reward reads
    `parse_meta_fields`). The reason is the first bad field's. Never raises on any string input.
    """
    f = parse_meta_fields(text, n_solution=n_solution, max_response_tokens=max_response_tokens)
    if isinstance(f, MetaParseFailure):
        return MetaParseFailure(f.reason.split("; ")[0])
    if not f.complete:
        return MetaParseFailure(f.errors[0])
    return MetaPrediction(notions=f.notions, pass_rate=f.pass_rate, solution_length=f.solution_length)  # type: ignore[arg-type]


_VALUE = re.compile(r'"(pass_rate|solution_length)"\s*:\s*(\d+)')
_NOTIONS = re.compile(r'"(math_notion)"\s*:\s*(\[[^\]]*\]|"[^"]*")')


def meta_value_spans(text: str) -> tuple[tuple[int, int], ...]:
    """[start, end) character spans of the pass_rate and solution_length digits of the last object.

    Meant for canonical completions (expert targets from `replace_meta_values`), where the values are
    plain integers; other spellings give no span. Lets behaviour cloning weight the few tokens that
    carry the calibration signal (see `masa.algo.losses.bc_loss`).
    """
    spans = meta_field_spans(text)
    return tuple(sorted(spans[k] for k in ("pass_rate", "solution_length") if k in spans))


def replace_meta_values(text: str, *, pass_rate: int, solution_length: int) -> str:
    """`text` with its last JSON object rewritten canonically holding the given values.

    Reasoning and notions are kept (notions normalised as by `parse_meta`; dropped if malformed);
    text around the object (e.g. a closing code fence) is kept. If no object is found, the reasoning
    inside ``<meta>`` (or the whole stripped text when there is no tag) is wrapped into a canonical
    completion with no notions. Used to build expert targets holding the *observed* statistics.
    """
    cut = max(0, len(text) - MAX_PARSE_CHARS)
    found = _last_object(text[cut:])
    if found is None:
        reasoning = extract_meta_reasoning(text) if META_OPEN in text else text.strip()
        return format_meta_completion(reasoning.replace(META_CLOSE, ""), notions=(),
                                      pass_rate=pass_rate, solution_length=solution_length)
    obj, start, end = found
    notions = _as_notions(obj.get("math_notion", []))
    notions = () if isinstance(notions, str) else notions
    _check_values(notions, pass_rate, solution_length)
    body = _canonical_json(notions, pass_rate, solution_length)
    return text[: cut + start] + body + text[cut + end:]


def meta_field_spans(text: str) -> dict[str, tuple[int, int]]:
    """[start, end) character span of each field's value in the last JSON object of `text`.

    Keys among "math_notion" (the list, brackets included, or a string), "pass_rate" and
    "solution_length" (plain integer digits; other spellings give no span). A repeated key keeps its
    last occurrence, as a JSON parser does. Lets per-field credit assignment
    (`masa.algo.advantages.token_advantages`) give each value's tokens its own reward's advantage.
    """
    cut = max(0, len(text) - MAX_PARSE_CHARS)
    found = _last_object(text[cut:])
    if found is None:
        return {}
    _, start, end = found
    base = cut + start
    body = text[base: cut + end]
    matches = sorted([*_NOTIONS.finditer(body), *_VALUE.finditer(body)], key=lambda m: m.start())
    return {m.group(1): (base + m.start(2), base + m.end(2)) for m in matches}
