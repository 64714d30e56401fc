"""Recursive-descent parser: tokens -> a small expression AST of plain tuples.

Nodes (first element is the kind):

    ("num", Fraction)            ("sym", name)           ("const", "pi" | "inf")
    ("add", (x, ...))            ("mul", (x, ...))       ("neg", x)       ("div", a, b)
    ("pow", a, b)                ("fn", name, x)         ("root", n, x)   ("fact", x)
    ("binom", n, k)              ("pm", a | None, b)     ("text", s)      ("based", digits, base)
    ("tuple", items)             ("list", items)         ("set", items)   ("union", items)
    ("interval", lo_closed, a, b, hi_closed)             ("matrix", rows)
    ("rel", ops, operands)       with ops from = < <= != in (`>`/`>=` are flipped to `<`/`<=`)

Grammar, loosest first: list `,` > relation > union `\\cup` > sum `+ - ±` > term `* /` and implicit
multiplication > unary minus > power `^` > postfix `!` > atom.  LaTeX conventions: `\\frac12` takes
single characters, `3\\frac{1}{2}` is the mixed number 7/2, `(a,b]` is an interval, `\\{..\\}` a set,
a bare comma list is unordered (it is how "all solutions" are written).  Nesting deeper than
`MAX_DEPTH` raises `VerifierLimit` instead of exhausting the interpreter's stack.
"""

from __future__ import annotations

from fractions import Fraction

from masa.algo.verifier.lexer import FUNCTIONS, Token, VerifierLimit, VerifierSyntaxError

MAX_DEPTH = 60
MATRIX_ENVS = frozenset({"pmatrix", "bmatrix", "matrix", "Bmatrix", "smallmatrix", "array"})
RELOPS = frozenset({"=", "<", ">", "<=", ">=", "!=", "in", ":"})  # `:` is a ratio, compared side by side
_FLIP = {">": "<", ">=": "<="}
_ATOM_START = frozenset({"num", "id", "cmd", "text", "begin"})
_ATOM_START_OPS = frozenset({"(", "{", "\\{"})
_CLOSERS = {"(": (")", "]"), "[": ("]", ")")}
_REALS = ("tuple", (("neg", ("const", "inf")), ("const", "inf")))
_UNARY_FUNCS = {"lfloor": ("rfloor", "floor"), "lceil": ("rceil", "ceil")}


def num_node(text: str) -> tuple:
    return ("num", Fraction(text))


class Parser:
    """One-shot parser over a token list; use `parse(tokens)`."""

    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0
        self.abs_open = 0

    # -- token helpers ---------------------------------------------------------------------------
    def peek(self, k: int = 0) -> Token | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def at(self, kind: str, value: str | None = None) -> bool:
        t = self.peek()
        return t is not None and t[0] == kind and (value is None or t[1] == value)

    def take(self) -> Token:
        t = self.peek()
        if t is None:
            raise VerifierSyntaxError("unexpected end of answer")
        self.i += 1
        return t

    def expect(self, kind: str, value: str) -> None:
        t = self.take()
        if t != (kind, value):
            raise VerifierSyntaxError(f"expected {value!r}, got {t[1]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise VerifierLimit(f"answer nested deeper than {MAX_DEPTH}")

    # -- grammar -----------------------------------------------------------------------------------
    def seq(self, closers: tuple[str, ...] = ()) -> list[tuple]:
        items = [] if self.at_any(closers) else [self.relation()]
        while self.at("op", ","):
            self.take()
            items.append(self.relation())
        return items

    def at_any(self, closers: tuple[str, ...]) -> bool:
        t = self.peek()
        return t is not None and t[0] == "op" and t[1] in closers

    def relation(self) -> tuple:
        operands, ops = [self.union()], []
        while (t := self.peek()) is not None and t[0] == "op" and t[1] in RELOPS:
            self.take()
            ops.append(t[1])
            operands.append(self.union())
        if not ops:
            return operands[0]
        if all(o in _FLIP for o in ops):  # a > b > c  ==  c < b < a
            return ("rel", tuple(_FLIP[o] for o in reversed(ops)), tuple(reversed(operands)))
        return ("rel", tuple(ops), tuple(operands))

    def union(self) -> tuple:
        items = [self.sum()]
        while self.at("op", "cup"):
            self.take()
            items.append(self.sum())
        return items[0] if len(items) == 1 else ("union", tuple(items))

    def sum(self) -> tuple:
        if self.at("op", "±") or self.at("op", "∓"):
            self.take()
            node: tuple | None = ("pm", None, self.term())
        else:
            node = self.term()
        while (t := self.peek()) is not None and t[0] == "op" and t[1] in ("+", "-", "±", "∓"):
            self.take()
            rhs = self.term()
            if t[1] in ("±", "∓"):
                node = ("pm", node, rhs)
            else:
                node = _add(node, rhs if t[1] == "+" else ("neg", rhs))
        return node

    def term(self) -> tuple:
        node = self.unary()
        while True:
            t = self.peek()
            if t is None:
                return node
            if t[0] == "op" and t[1] in ("*", "/"):
                self.take()
                rhs = self.unary()
                node = _mul(node, rhs) if t[1] == "*" else ("div", node, rhs)
            elif (t[0] in _ATOM_START and t[1] not in ("rfloor", "rceil")) or (
                t[0] == "op" and (t[1] in _ATOM_START_OPS or (t[1] == "|" and not self.abs_open))
            ):
                node = _mul(node, self.power())
            else:
                return node

    def unary(self) -> tuple:
        if self.at("op", "-") or self.at("op", "+"):
            sign = self.take()[1]
            self.enter()
            inner = self.unary()
            self.depth -= 1
            return ("neg", inner) if sign == "-" else inner
        return self.power()

    def power(self) -> tuple:
        base = self.postfix()
        if self.at("op", "^"):
            self.take()
            self.enter()
            base = ("pow", base, self.exponent())
            self.depth -= 1
            while self.at("op", "!"):
                self.take()
                base = ("fact", base)
        return base

    def exponent(self) -> tuple:
        if self.at("op", "-"):
            self.take()
            return ("neg", self.exponent())
        return self.postfix()

    def postfix(self) -> tuple:
        node = self.atom()
        while self.at("op", "!") or self.at("op", "'"):
            node = ("fact", node) if self.take()[1] == "!" else ("fn", "prime", node)
        return node

    def atom(self) -> tuple:
        self.enter()
        try:
            return self._atom()
        finally:
            self.depth -= 1

    def _atom(self) -> tuple:
        kind, val = self.take()
        if kind == "num":
            return self.number(val)
        if kind == "id":
            return self.subscripted(("sym", val))
        if kind == "text":
            return ("text", val)
        if kind == "cmd":
            return self.command(val)
        if kind == "begin":
            return self.matrix(val)
        if kind == "op":
            return self.bracketed(val)
        raise VerifierSyntaxError(f"unexpected {val!r}")

    def number(self, text: str) -> tuple:
        node = num_node(text)
        if self.at("op", "_"):  # 221_3: a numeral in another base, compared as written
            self.take()
            return ("based", text, self.label())
        if self.at("cmd", "overline") and text.count(".") == 1:  # 0.\overline{36}
            self.take()
            digits = self.label()
            if digits.isdigit():
                return ("num", _repeating(text, digits))
            raise VerifierSyntaxError("bad repeating decimal")
        if self.at("cmd", "frac") and text.isdigit() and "." not in text:
            save = self.i
            self.take()
            a, b = self.arg(), self.arg()
            if a[0] == "num" and b[0] == "num" and a[1].denominator == 1 and b[1].denominator == 1:
                return ("add", (node, ("div", a, b)))  # mixed number 3\frac12 = 7/2
            self.i = save
        return node

    def subscripted(self, sym: tuple) -> tuple:
        if self.at("op", "_"):
            self.take()
            return ("sym", f"{sym[1]}_{self.label()}")
        return sym

    def label(self) -> str:
        """A subscript or similar written label, as a canonical string (`{10}` -> `10`)."""
        if self.at("op", "{"):
            start = self.i
            self.take()
            depth = 1
            while depth:
                k, v = self.take()
                depth += (v == "{") - (v == "}") if k == "op" else 0
            return "".join(v for _, v in self.toks[start + 1 : self.i - 1])
        return self.take()[1]

    def arg(self) -> tuple:
        """A command argument: `{...}` or one character (`\\frac12`)."""
        t = self.peek()
        if t is not None and t[0] == "num" and t[1][:1].isdigit() and t[1][1:] not in ("", "."):
            self.toks = self.toks[: self.i] + [("num", t[1][0]), ("num", t[1][1:])] + self.toks[self.i + 1 :]
        if self.at("op", "{"):
            self.take()
            node = self.group_body("}")
            return node
        return self.atom()

    def group_body(self, closer: str) -> tuple:
        items = self.seq((closer,))
        self.expect("op", closer)
        if len(items) != 1:
            return ("list", tuple(items))
        return items[0]

    def command(self, name: str) -> tuple:
        if name == "frac":
            return ("div", self.arg(), self.arg())
        if name == "binom":
            return ("binom", self.arg(), self.arg())
        if name == "sqrt":
            if self.at("op", "["):
                self.take()
                n = self.group_body("]")
                return ("root", n, self.arg())
            return ("root", ("num", Fraction(2)), self.arg())
        if name == "pi":
            return ("const", "pi")
        if name == "infty":
            return ("const", "inf")
        if name == "emptyset":
            return ("set", ())
        if name in _UNARY_FUNCS:
            closer, fname = _UNARY_FUNCS[name]
            inner = self.sum()
            self.expect("cmd", closer)
            return ("fn", fname, inner)
        if name in FUNCTIONS:
            return self.function(name)
        if name in ("boxed", "mathbb", "operatorname"):
            inner = self.arg()
            if name == "operatorname" and inner[0] == "text" and inner[1] in FUNCTIONS:
                return self.function(inner[1])
            if name == "mathbb":  # \mathbb{R} is the interval (-inf, inf); other sets stay names
                return _REALS if inner == ("sym", "R") else ("text", f"mathbb:{inner}")
            return inner
        if name in ("overline", "vec", "hat", "bar", "widehat"):
            return ("sym", f"\\{name}{{{self.label()}}}")
        raise VerifierSyntaxError(f"unexpected \\{name}")

    def function(self, name: str) -> tuple:
        power = base = None
        while self.at("op", "^") or self.at("op", "_"):
            which = self.take()[1]
            self.enter()
            if which == "^":
                power = self.exponent()
            else:
                base = self.exponent()
            self.depth -= 1
        if self.at("op", "("):
            arg = self.atom()
        else:  # \sin 2x = sin(2x): the argument runs over numbers and letters
            arg = self.power()
            while self.at("num") or self.at("id"):
                arg = _mul(arg, self.power())
        node = ("fn", name, arg)
        if base is not None:  # log_b x = ln x / ln b
            node = ("div", ("fn", "ln", arg), ("fn", "ln", base))
        if power is not None:
            if power == ("neg", ("num", Fraction(1))):
                return ("fn", "arc" + name, arg) if name in ("sin", "cos", "tan") else ("pow", node, power)
            node = ("pow", node, power)
        return node

    def bracketed(self, op: str) -> tuple:
        if op in ("(", "["):
            items = self.seq(_CLOSERS[op])
            close = self.take()[1]
            if close not in _CLOSERS[op]:
                raise VerifierSyntaxError(f"unclosed {op!r}")
            if len(items) == 2 and (op, close) != ("(", ")"):
                return ("interval", op == "[", items[0], items[1], close == "]")
            if len(items) == 1 and close == {"(": ")", "[": "]"}[op]:
                return items[0]
            return ("tuple", tuple(items))
        if op == "{":
            return self.group_body("}")
        if op == "\\{":
            items = self.seq(("\\}",))
            self.expect("op", "\\}")
            return ("set", tuple(items))
        if op == "|":
            self.abs_open += 1
            inner = self.sum()
            self.abs_open -= 1
            self.expect("op", "|")
            return ("fn", "abs", inner)
        raise VerifierSyntaxError(f"unexpected {op!r}")

    def matrix(self, env: str) -> tuple:
        if env not in MATRIX_ENVS:
            raise VerifierSyntaxError(f"unsupported environment {env!r}")
        if env == "array" and self.at("op", "{"):
            self.label()  # column spec
        rows: list[tuple] = [()]
        while not self.at("end"):
            if self.at("op", "\\\\"):
                self.take()
                rows.append(())
            elif self.at("op", "&"):
                self.take()
            else:
                rows[-1] = rows[-1] + (self.sum(),)
        self.take()
        rows = [r for r in rows if r]
        if not rows or len({len(r) for r in rows}) != 1:
            raise VerifierSyntaxError("ragged or empty matrix")
        return ("matrix", tuple(rows))


def _add(a: tuple, b: tuple) -> tuple:
    return ("add", (a[1] if a[0] == "add" else (a,)) + (b,))


def _mul(a: tuple, b: tuple) -> tuple:
    return ("mul", (a[1] if a[0] == "mul" else (a,)) + (b,))


def _repeating(text: str, digits: str) -> Fraction:
    """`0.1` + overline `36` -> 0.1363636... exactly."""
    whole, frac = text.split(".")
    fixed = Fraction(int(whole or "0")) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0)
    return fixed + Fraction(int(digits), (10 ** len(digits) - 1) * 10 ** len(frac))


def parse(toks: list[Token]) -> tuple:
    """The AST of a whole answer; a top-level comma list becomes ("list", items)."""
    if not toks:
        raise VerifierSyntaxError("empty answer")
    p = Parser(toks)
    items = p.seq()
    if p.peek() is not None:
        raise VerifierSyntaxError(f"unexpected {p.peek()[1]!r}")
    return items[0] if len(items) == 1 else ("list", tuple(items))
