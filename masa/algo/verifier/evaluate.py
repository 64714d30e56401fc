"""Evaluate an answer AST: exactly over the rationals, or numerically over complex floats.

`exact(node)` returns a `Fraction` when the expression is a rational number built from rationals
(so `\\frac{1}{2004!}` and `\\frac{1}{2006!}` differ, and `0.5 == \\frac12`), else None.  `numeric(node,
env)` returns a complex value with the free symbols bound by `env`; `e` is Euler's number and `i` the
imaginary unit.  Both enforce hard limits (integer size, exponent, factorial argument) and raise
`VerifierLimit` rather than computing a huge number; the numeric side relies on float overflow.
"""

from __future__ import annotations

import cmath
import math
from fractions import Fraction

from masa.algo.verifier.lexer import VerifierLimit

MAX_BITS = 40_000  # numerator/denominator size of any exact intermediate (2006! is ~19k bits)
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 3_000
CONSTANT_SYMBOLS = {"e": complex(math.e), "i": 1j}


class NumericError(ArithmeticError):
    """The expression has no finite numeric value at this point."""


def _checked(q: Fraction) -> Fraction:
    if q.numerator.bit_length() > MAX_BITS or q.denominator.bit_length() > MAX_BITS:
        raise VerifierLimit(f"exact value larger than {MAX_BITS} bits")
    return q


def _as_int(q: Fraction | None) -> int | None:
    return q.numerator if q is not None and q.denominator == 1 else None


def _exact_pow(base: Fraction, exp: Fraction) -> Fraction | None:
    if exp.denominator != 1:  # 8^{2/3} = (8^{1/3})^2 when the root is rational
        root = _exact_root(base, exp.denominator)
        return None if root is None else _exact_pow(root, Fraction(exp.numerator))
    e = exp.numerator
    if base in (0, 1, -1):
        if base == 0 and e < 0:
            return None
        return base**e
    if abs(e) > MAX_EXPONENT or max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(e) > MAX_BITS:
        raise VerifierLimit("exponent too large")
    return _checked(base**e)


def _int_root(n: int, k: int) -> int | None:
    if n < 0:
        return None
    r = math.isqrt(n) if k == 2 else round(n ** (1.0 / k)) if n.bit_length() < 1000 else None
    if r is None:
        return None
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**k == n:
            return c
    return None


def _exact_root(x: Fraction | None, k: int) -> Fraction | None:
    """The rational k-th root of x, or None (irrational, or not real)."""
    if x is None or k <= 0 or k > 64:
        return None
    sign = 1
    if x < 0:
        if k % 2 == 0:
            return None
        sign, x = -1, -x
    p, q = _int_root(x.numerator, k), _int_root(x.denominator, k)
    return None if p is None or q is None else sign * Fraction(p, q)


def exact(node: tuple) -> Fraction | None:
    """The exact rational value of `node`, or None when it is not a rational constant."""
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        v = exact(node[1])
        return None if v is None else -v
    if kind in ("add", "mul"):
        acc = Fraction(0 if kind == "add" else 1)
        for child in node[1]:
            v = exact(child)
            if v is None:
                return None
            acc = _checked(acc + v if kind == "add" else acc * v)
        return acc
    if kind == "div":
        a, b = exact(node[1]), exact(node[2])
        return None if a is None or b is None or b == 0 else _checked(a / b)
    if kind == "pow":
        a, b = exact(node[1]), exact(node[2])
        return None if a is None or b is None else _exact_pow(a, b)
    if kind == "root":
        return _exact_root(exact(node[2]), _as_int(exact(node[1])) or 0)
    if kind == "fact":
        n = _as_int(exact(node[1]))
        if n is None or n < 0:
            return None
        if n > MAX_FACTORIAL:
            raise VerifierLimit(f"factorial argument above {MAX_FACTORIAL}")
        return Fraction(math.factorial(n))
    if kind == "binom":
        n, k = _as_int(exact(node[1])), _as_int(exact(node[2]))
        if n is None or k is None or n < 0 or k < 0:
            return None
        if n > MAX_FACTORIAL:
            raise VerifierLimit(f"binomial argument above {MAX_FACTORIAL}")
        return Fraction(math.comb(n, k))
    if kind == "fn" and node[1] in ("abs", "floor", "ceil"):
        v = exact(node[2])
        if v is None:
            return None
        return abs(v) if node[1] == "abs" else Fraction(math.floor(v) if node[1] == "floor" else math.ceil(v))
    return None


_FUNCS = {
    "sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "arcsin": cmath.asin, "arccos": cmath.acos,
    "arctan": cmath.atan, "sinh": cmath.sinh, "cosh": cmath.cosh, "tanh": cmath.tanh, "ln": cmath.log,
    "log": cmath.log, "lg": cmath.log10, "exp": cmath.exp, "abs": lambda z: complex(abs(z)),
    "cot": lambda z: 1 / cmath.tan(z), "sec": lambda z: 1 / cmath.cos(z), "csc": lambda z: 1 / cmath.sin(z),
    "floor": lambda z: complex(math.floor(z.real)), "ceil": lambda z: complex(math.ceil(z.real)),
}


def _num_pow(a: complex, b: complex) -> complex:
    if b.imag == 0 and b.real == int(b.real) and abs(b.real) <= 64:
        if a == 0 and b.real < 0:
            raise NumericError("0 to a negative power")
        return a ** int(b.real)
    if a == 0:
        if b.real > 0:
            return 0j
        raise NumericError("0 to a non-positive power")
    return cmath.exp(b * cmath.log(a))


def _num_root(x: complex, k: complex) -> complex:
    if x.imag == 0 and x.real < 0 and k.imag == 0 and k.real == int(k.real) and int(k.real) % 2 == 1:
        return complex(-((-x.real) ** (1.0 / k.real)))  # the real odd root: \sqrt[3]{-8} = -2
    return _num_pow(x, 1 / k)


def _num_fact(x: complex) -> complex:
    if x.imag != 0 or x.real < 0 or x.real > 170:
        raise NumericError("factorial out of range")
    return complex(math.gamma(x.real + 1))


def numeric(node: tuple, env: dict[str, complex]) -> complex:
    """`node` evaluated in complex floats with symbols from `env`; raises NumericError."""
    try:
        v = _numeric(node, env)
    except (ZeroDivisionError, OverflowError, ValueError) as e:
        raise NumericError(str(e)) from None
    if cmath.isnan(v) or cmath.isinf(v):
        raise NumericError("not finite")
    return v


def _numeric(node: tuple, env: dict[str, complex]) -> complex:
    kind = node[0]
    if kind == "num":
        return complex(node[1])
    if kind == "sym":
        name = node[1]
        if name in env:
            return env[name]
        if name in CONSTANT_SYMBOLS:
            return CONSTANT_SYMBOLS[name]
        raise NumericError(f"unbound symbol {name}")
    if kind == "const" and node[1] == "pi":
        return complex(math.pi)
    if kind == "neg":
        return -_numeric(node[1], env)
    if kind == "add":
        return sum((_numeric(c, env) for c in node[1]), 0j)
    if kind == "mul":
        acc = 1 + 0j
        for c in node[1]:
            acc *= _numeric(c, env)
        return acc
    if kind == "div":
        return _numeric(node[1], env) / _numeric(node[2], env)
    if kind == "pow":
        return _num_pow(_numeric(node[1], env), _numeric(node[2], env))
    if kind == "root":
        return _num_root(_numeric(node[2], env), _numeric(node[1], env))
    if kind == "fact":
        return _num_fact(_numeric(node[1], env))
    if kind == "binom":
        n, k = _numeric(node[1], env), _numeric(node[2], env)
        return _num_fact(n) / (_num_fact(k) * _num_fact(n - k))
    if kind == "fn" and node[1] in _FUNCS:
        return _FUNCS[node[1]](_numeric(node[2], env))
    raise NumericError(f"cannot evaluate {kind}")


def free_symbols(node: tuple) -> frozenset[str]:
    """Names of the symbols in `node` other than the constants e and i."""
    out: set[str] = set()
    stack: list[object] = [node]
    while stack:
        x = stack.pop()
        if not isinstance(x, tuple) or not x:
            continue
        if x[0] == "sym":
            if x[1] not in CONSTANT_SYMBOLS:
                out.add(x[1])
        elif x[0] != "text":  # a node's children, or a tuple of nodes
            stack.extend(x[1:] if isinstance(x[0], str) else x)
    return frozenset(out)
