"""LaTeX answer text -> flat token list (no evaluation of anything, ever).

The lexer first cleans presentation-only LaTeX (spacing, `\\left`, `$`, degree signs, percent, dollar
signs, unit words in `\\text{}`), then reads tokens.  Every token is a `(kind, value)` pair:

    num    "1000", "2.5", ".5"  (a thousands separator `1,000` is folded in outside brackets)
    id     one letter or an unknown command such as `\\alpha` (implicit multiplication: `xy` = x*y)
    cmd    a known command name without backslash: frac, sqrt, pi, infty, sin, binom, ...
    op     punctuation and operators: + - * / ^ _ ( ) [ ] { } , = < > <= >= != ! | & \\\\ ± in cup \\{ \\}
    text   the normalised content of `\\text{...}`, `\\mathrm{...}`, `\\mbox{...}`
    begin/end  a `\\begin{env}` / `\\end{env}` with env name

Hard limits (`MAX_CHARS`, `MAX_TOKENS`) raise `VerifierLimit` so a pathological answer fails fast.
"""

from __future__ import annotations

import re

MAX_CHARS = 4000
MAX_TOKENS = 1500

Token = tuple[str, str]


class VerifierLimit(ValueError):
    """An input exceeded one of the verifier's hard size limits."""


class VerifierSyntaxError(ValueError):
    """The answer is not an expression this verifier understands."""


FUNCTIONS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln exp lg det".split()
)
CONSTANTS = frozenset({"pi", "infty", "emptyset", "varnothing"})
STRUCTURAL = frozenset(
    "frac sqrt binom overline vec hat bar mathbb operatorname boxed widehat lfloor rfloor lceil rceil".split()
)
KNOWN = FUNCTIONS | CONSTANTS | STRUCTURAL

# command name -> op token it stands for
OP_COMMANDS = {
    "cdot": "*", "times": "*", "ast": "*", "div": "/", "pm": "±", "mp": "∓",
    "le": "<=", "leq": "<=", "leqslant": "<=", "ge": ">=", "geq": ">=", "geqslant": ">=",
    "ne": "!=", "neq": "!=", "lt": "<", "gt": ">", "in": "in", "cup": "cup", "cap": "cap",
    "to": "->", "rightarrow": "->", "colon": ":", "mid": "|", "vert": "|", "lvert": "|", "rvert": "|",
    "prime": "'", "approx": "=",
}
ALIASES = {"dfrac": "frac", "tfrac": "frac", "cfrac": "frac", "dbinom": "binom", "tbinom": "binom",
           "varnothing": "emptyset", "arctg": "arctan", "tg": "tan"}
TEXT_COMMANDS = frozenset("text textbf textrm textit textnormal mbox mathrm mathbf mathit rm bf".split())
UNICODE = {"≤": "<=", "≥": ">=", "≠": "!=", "×": "*", "·": "*", "÷": "/", "−": "-", "–": "-",
           "±": "±", "∞": "\\infty ", "π": "\\pi ", "√": "\\sqrt", "∪": "cup", "∈": "in"}
SINGLE_OPS = frozenset("+-*/^_()[]{},=<>!|&:'")

UNIT_WORDS = frozenset(
    """cm m mm km in inch inches ft feet foot yd yard yards mi mile miles unit units sq square cubic
    degree degrees dollar dollars cent cents hour hours hr hrs minute minutes min second seconds sec
    day days week weeks month months year years meter meters metre metres centimeter centimeters
    kilometer kilometers millimeter millimeters kg g gram grams pound pounds lb lbs ounce ounces oz
    mph kph liter liters l ml gallon gallons per mps s cms""".split()
)

# A row break `\\\\` comes first so that `\\\\ 3` is never read as `\\` + the space command `\ `.
_SPACING = re.compile(
    r"(\\\\)|\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])|\\[,;: ]|\\q?quad(?![a-zA-Z])|\\displaystyle"
    r"|\\(?:mathrm|text)\{\s*\}|~"
)
# `\\sin 30^\\circ`: the one place where a degree sign changes the value (radians below).
_TRIG_DEGREES = re.compile(
    r"(\\(?:sin|cos|tan|cot|sec|csc))\s*(\(?)\s*(-?\d+(?:\.\d+)?)\s*\^\s*\{?\s*\\circ\s*\}?"
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![a-zA-Z])|\\degree(?![a-zA-Z])|°")
_THIN_SPACE = re.compile(r"\\!")
_EXPLICIT_SEPARATOR = re.compile(r"(?<=\d),\s*\\!\s*(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"\\?%")
_DOLLAR = re.compile(r"\\\$|\$")
_BRACED_COMMA = re.compile(r"(?<=\d)\{,\}(?=\d)")
_UNIT_TEXT = re.compile(
    r"\\(?:text|mbox|mathrm|textrm|textnormal)\s*\{([^{}]*)\}(\s*\^\s*\{?\s*[23]\s*\}?)?"
)
# `440{cm}^2` (MATH targets lost their \text); only after a digit, never `\frac{1}{s}`.
_UNIT_BARE = re.compile(r"(?<=\d)\s*\{([a-zA-Z ]+)\}(\s*\^\s*\{?\s*[23]\s*\}?)?")


def _is_unit(words: str) -> bool:
    parts = words.replace(".", " ").lower().split()
    return bool(parts) and all(p in UNIT_WORDS for p in parts)


def _drop_units(s: str) -> str:
    """Remove unit words given as text (`440\\text{ cm}^2`, `5\\mbox{ inches}`, `440{cm}^2`)."""

    def text_unit(m: re.Match) -> str:
        body, before = m.group(1), s[: m.start()].rstrip()
        # Words trailing a number (`65 \text{ children tickets}`) are a unit, not part of the value.
        trailing = not s[m.end() :].strip() and before[-1:] in tuple("0123456789}") and re.fullmatch(
            r"[\sa-zA-Z.]+", body
        )
        return "" if _is_unit(body) or trailing else m.group(0)

    s = _UNIT_TEXT.sub(text_unit, s)
    return _UNIT_BARE.sub(lambda m: "" if _is_unit(m.group(1)) else m.group(0), s)


def clean(s: str) -> str:
    """Remove presentation-only LaTeX; the result is still LaTeX text."""
    if len(s) > MAX_CHARS:
        raise VerifierLimit(f"answer longer than {MAX_CHARS} characters")
    s = _DOLLAR.sub("", s)
    s = _EXPLICIT_SEPARATOR.sub("", s)  # `11,\! 111,\! 100`: typeset digit groups
    s = _THIN_SPACE.sub("", s)  # `15,\!000`: a negative space only ever glues
    s = _SPACING.sub(lambda m: m.group(1) or " ", s)
    s = _TRIG_DEGREES.sub(r"\1\2(\3\\pi/180)", s)
    s = _DEGREES.sub("", s)  # elsewhere a degree sign is a unit: 30^\circ = 30
    s = _PERCENT.sub("", s)
    s = _BRACED_COMMA.sub("", s)
    s = _drop_units(s)
    s = s.strip()
    if s.endswith("\\") and not s.endswith("\\\\"):  # a dangling backslash (`x.\ ` once stripped)
        s = s[:-1].rstrip()
    while s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


def group_end(s: str, i: int) -> int | None:
    """`s[i]` is `{`; the index of its matching `}` (escaped braces skipped), or None if it never closes."""
    depth = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _read_group(s: str, i: int) -> tuple[str, int]:
    """`s[i]` is `{`; return the balanced group's content and the index after its `}`."""
    j = group_end(s, i)
    if j is None:
        raise VerifierSyntaxError("unbalanced braces")
    return s[i + 1 : j], j + 1


def normalise_text(body: str) -> str:
    """`\\text{ (B) }` -> `B`; text compares by this form (spaces removed, case kept)."""
    t = re.sub(r"\s+", "", body)
    if re.fullmatch(r"\([A-Za-z]\)", t):
        t = t[1]
    return t


_LETTERS = re.compile(r"[a-zA-Z]+")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d{1,3}(?:,\d{3})+(?=,\d{1,2}(?!\d)|,\d{4})")


def _lex_number(s: str, i: int, depth: int, separators: bool) -> tuple[str, int]:
    if depth == 0 and separators:
        m = _GROUPED.match(s, i)
        # `1,000` is a thousands separator only outside brackets: `(1,000)` is a pair.
        if m and "," in m.group(0):
            return m.group(0).replace(",", ""), m.end()
    m = _NUMBER.match(s, i)
    return m.group(0), m.end()


def _split_command(name: str) -> list[Token]:
    """`\\tanx` (spaces were removed upstream) -> tan, x; unknown commands are symbols (`\\alpha`)."""
    name = ALIASES.get(name, name)
    if name in OP_COMMANDS:
        return [("op", OP_COMMANDS[name])]
    if name in KNOWN:
        return [("cmd", name)]
    for k in range(len(name) - 1, 1, -1):
        head = ALIASES.get(name[:k], name[:k])
        if head in FUNCTIONS or head in CONSTANTS or head in OP_COMMANDS:
            return _split_command(head) + [("id", c) for c in name[k:]]
    return [("id", "\\" + name)]


def tokenize(s: str, separators: bool = True) -> list[Token]:
    """Tokens of the cleaned answer text `s` (see module docstring).

    separators=False reads `45,135` as two numbers instead of 45135 (the caller tries both readings).
    """
    toks: list[Token] = []
    depth, i, n = 0, 0, len(s)
    while i < n:
        if len(toks) > MAX_TOKENS:
            raise VerifierLimit(f"answer has more than {MAX_TOKENS} tokens")
        c = s[i]
        if c.isspace():
            i += 1
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            num, i = _lex_number(s, i, depth, separators)
            toks.append(("num", num))
        elif c.isalpha() and c.isascii():
            toks.append(("id", c))
            i += 1
        elif c == "\\":
            i = _lex_backslash(s, i, toks)
            depth += {"\\{": 1, "\\}": -1}.get(toks[-1][1], 0) if toks else 0
        elif c in UNICODE:
            toks.extend(tokenize(UNICODE[c]) if UNICODE[c].startswith("\\") else [("op", UNICODE[c])])
            i += 1
        elif c == ";":  # `(-4,27);(2,15)`: a list written with semicolons
            toks.append(("op", ","))
            i += 1
        elif c == "," and toks and toks[-1] == ("op", ","):  # `2, 3, \text{and} 4` left two commas
            i += 1
        elif c in SINGLE_OPS:
            toks.append(("op", c))
            depth += 1 if c in "([" else -1 if c in ")]" else 0
            i += 1
        else:
            raise VerifierSyntaxError(f"unexpected character {c!r}")
    return toks


def _lex_backslash(s: str, i: int, toks: list[Token]) -> int:
    m = _LETTERS.match(s, i + 1)
    if m is None:
        nxt = s[i + 1 : i + 2]
        if nxt == "\\":
            toks.append(("op", "\\\\"))
        elif nxt in ("{", "}"):
            toks.append(("op", "\\" + nxt))
        elif nxt == "|":
            toks.append(("op", "|"))
        elif nxt in ("", " "):
            pass
        elif nxt.isdigit() or nxt in "-.(":
            # Reference data sometimes has `\begin{pmatrix}1\3\end{pmatrix}`: a row break lost a backslash.
            toks.append(("op", "\\\\"))
            return i + 1
        else:
            raise VerifierSyntaxError(f"unexpected command \\{nxt}")
        return i + 2
    name, j = m.group(0), m.end()
    if name in ("begin", "end"):
        k = j
        while k < len(s) and s[k] == " ":
            k += 1
        if k >= len(s) or s[k] != "{":
            raise VerifierSyntaxError(f"\\{name} without environment")
        env, j = _read_group(s, k)
        toks.append((name, env.strip().rstrip("*")))
        return j
    if name in TEXT_COMMANDS:
        k = j
        while k < len(s) and s[k] == " ":
            k += 1
        if k < len(s) and s[k] == "{":
            body, j = _read_group(s, k)
            for tok in _text_tokens(body):
                if tok != ("op", ",") or (toks and toks[-1] != ("op", ",")):
                    toks.append(tok)
        return j
    toks.extend(_split_command(name))
    return j


def _text_tokens(body: str) -> list[Token]:
    """A text group is an opaque word, except when it holds plain math (`\\text{13}`, `\\mathrm{e}`)."""
    t = normalise_text(body)
    if not t:
        return []
    quantity = re.fullmatch(r"\s*(-?[\d.,]+)\s+([a-zA-Z .]+)", body)
    if quantity and _is_unit(quantity.group(2)):  # \text{5 dollars}
        return tokenize(quantity.group(1))
    if t.strip(",") in ("and", "or"):  # `2, 3 \text{, and } 4`, `-2 \text{ or } -12`
        return [("op", ",")]
    if "," in t:  # \text{A,D}: a list of choices
        parts = [_text_tokens(p) for p in t.split(",")]
        return [tok for k, p in enumerate(parts) for tok in ([("op", ",")] if k else []) + p]
    if re.fullmatch(r"[\d.,+\-/()]+|[a-zA-Z]", t):
        return tokenize(t)
    return [("text", t)]
