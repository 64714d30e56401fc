"""Mathematical equivalence of two parsed answers.

Decision order for two ASTs:
1. relations: `x = 3` matches `3` (a lone symbol on one side is dropped); two equations match when
   their sides match in order or swapped; inequalities match side by side after `>` became `<`.
   Equations are NOT collapsed to one side: `x+y=1` does not match `y=1-x` (documented choice: the
   answer's form is part of what was asked, and lhs-rhs equal up to a factor would accept `2x=2`).
2. `\\pm` is expanded into its alternatives, compared as an unordered list.
3. collections: tuples and intervals in order (open and closed ends differ), sets and bare comma
   lists regardless of order, matrices cell by cell (a one-column matrix matches a tuple).
4. scalars: exact rational comparison when both are rational constants; else both must have the
   same free symbols and agree numerically (complex floats, relative tolerance) at a few fixed
   pseudo-random points.  Text matches text (or a one-letter symbol) by its normalised spelling.
"""

from __future__ import annotations

import random
from itertools import product

from masa.algo.verifier.evaluate import NumericError, exact, free_symbols, numeric
from masa.algo.verifier.lexer import VerifierLimit

COLLECTIONS = frozenset({"tuple", "list", "set", "interval", "matrix", "union"})
MAX_ITEMS = 200
MAX_ALTERNATIVES = 16
N_POINTS = 3
REL_TOL = 1e-11  # float noise is ~1e-15; 2.718281828 must not pass for e
_POINTS_RNG_SEED = 20251003  # fixed: the same answer pair always gets the same verdict


def equivalent(a: tuple, b: tuple) -> bool:
    """Whether answers `a` and `b` (ASTs) denote the same mathematical object."""
    if a == b:
        return True
    if a[0] == "rel" or b[0] == "rel":
        return _relations_equivalent(a, b)
    if _has_pm(a) or _has_pm(b):
        xs, ys = _alternatives(a), _alternatives(b)
        return _match_unordered(xs, ys) if "set" not in (a[0], b[0]) else _covers(xs, ys) and _covers(ys, xs)
    if a[0] in COLLECTIONS or b[0] in COLLECTIONS:
        return _collections_equivalent(a, b)
    return scalars_equivalent(a, b)


def _lone_symbol(n: tuple) -> bool:
    """A name being defined: `x` in `x = 3`, or `f(x)` (parsed as f*x) in `f(x) = x^2`."""
    return n[0] == "sym" or (n[0] == "mul" and len(n[1]) == 2 and all(c[0] == "sym" for c in n[1]))


def _relations_equivalent(a: tuple, b: tuple) -> bool:
    if a[0] == "rel" and b[0] == "rel":
        (ops_a, xs), (ops_b, ys) = a[1:], b[1:]
        if ops_a == ops_b and all(equivalent(x, y) for x, y in zip(xs, ys, strict=True)):
            return True
        symmetric = len(ops_a) == 1 and ops_a == ops_b and ops_a[0] in ("=", "!=")
        return symmetric and equivalent(xs[0], ys[1]) and equivalent(xs[1], ys[0])
    rel, other = (a, b) if a[0] == "rel" else (b, a)
    ops, (lhs, rhs) = rel[1], rel[2][:2]
    if len(ops) != 1 or ops[0] not in ("=", "in"):
        return False
    if _lone_symbol(lhs) and equivalent(rhs, other):
        return True
    return ops[0] == "=" and _lone_symbol(rhs) and not _lone_symbol(lhs) and equivalent(lhs, other)


def _has_pm(n: object) -> bool:
    if not isinstance(n, tuple) or not n:
        return False
    if n[0] == "pm":
        return True
    return any(_has_pm(c) for c in (n[1:] if isinstance(n[0], str) else n))


def _expand_pm(n: tuple) -> list[tuple]:
    """`1 \\pm \\sqrt2` -> [1 + sqrt2, 1 - sqrt2]; other nodes distribute over their children."""
    if not isinstance(n, tuple) or not n or not _has_pm(n):
        return [n]
    if n[0] == "pm":
        lefts = [None] if n[1] is None else _expand_pm(n[1])
        out = []
        for left, right in product(lefts, _expand_pm(n[2])):
            for r in (right, ("neg", right)):
                out.append(r if left is None else ("add", (left, r)))
        return _capped(out)
    if not isinstance(n[0], str):  # a tuple of child nodes
        return _capped([tuple(c) for c in product(*(_expand_pm(c) for c in n))])
    return _capped([(n[0], *rest) for rest in product(*(_expand_pm(c) for c in n[1:]))])


def _alternatives(n: tuple) -> list[tuple]:
    """The values an answer lists: `1\\pm\\sqrt2` -> two; `\\{1\\pm\\sqrt5, -2\\}` -> three."""
    if n[0] in ("list", "set"):
        return _capped([alt for item in n[1] for alt in _expand_pm(item)])
    return _expand_pm(n)


def _capped(xs: list) -> list:
    if len(xs) > MAX_ALTERNATIVES:
        raise VerifierLimit(f"more than {MAX_ALTERNATIVES} \\pm alternatives")
    return xs


def _match_unordered(xs: list | tuple, ys: list | tuple) -> bool:
    """Multiset equality of two item lists under `equivalent` (greedy is exact for an equivalence)."""
    if len(xs) != len(ys):
        return False
    if len(xs) > MAX_ITEMS:
        raise VerifierLimit(f"more than {MAX_ITEMS} items")
    left = list(ys)
    for x in xs:
        for k, y in enumerate(left):
            if equivalent(x, y):
                del left[k]
                break
        else:
            return False
    return True


def _covers(xs: tuple, ys: tuple) -> bool:
    return all(any(equivalent(x, y) for y in ys) for x in xs)


def _items_in_order(xs: tuple, ys: tuple) -> bool:
    return len(xs) == len(ys) and all(equivalent(x, y) for x, y in zip(xs, ys, strict=True))


def _column(m: tuple) -> tuple | None:
    rows = m[1]
    if all(len(r) == 1 for r in rows):
        return tuple(r[0] for r in rows)
    return rows[0] if len(rows) == 1 else None


def _collections_equivalent(a: tuple, b: tuple) -> bool:
    ka, kb = a[0], b[0]
    if ka != kb:
        if {ka, kb} == {"list", "set"}:  # `1, 2` answers "find the set" as well as `\{1, 2\}`
            return _covers(a[1], b[1]) and _covers(b[1], a[1])
        if {ka, kb} == {"matrix", "tuple"}:
            m, t = (a, b) if ka == "matrix" else (b, a)
            col = _column(m)
            return col is not None and _items_in_order(col, t[1])
        return False
    if ka == "tuple":
        return _items_in_order(a[1], b[1])
    if ka == "interval":
        return a[1] == b[1] and a[4] == b[4] and equivalent(a[2], b[2]) and equivalent(a[3], b[3])
    if ka == "list":
        return _match_unordered(a[1], b[1])
    if ka in ("set", "union"):
        return _covers(a[1], b[1]) and _covers(b[1], a[1])
    rows_a, rows_b = a[1], b[1]  # matrix
    return len(rows_a) == len(rows_b) and all(_items_in_order(r, s) for r, s in zip(rows_a, rows_b, strict=True))


def _infinity_sign(n: tuple) -> int:
    if n == ("const", "inf"):
        return 1
    if n[0] == "neg" and n[1] == ("const", "inf"):
        return -1
    return 0


def _text_name(n: tuple) -> str | None:
    """The spelling of a word: `\\text{odd}`, and `{odd}` or `odd` which parse as o*d*d."""
    if n[0] == "text" or (n[0] == "sym" and len(n[1]) == 1):
        return n[1].casefold()
    if n[0] == "mul" and all(c[0] == "sym" and len(c[1]) == 1 for c in n[1]):
        return "".join(c[1] for c in n[1]).casefold()
    return None


def scalars_equivalent(a: tuple, b: tuple) -> bool:
    """Equality of two scalar expressions (exact when rational, else numeric at sample points)."""
    if a[0] in ("text", "based") or b[0] in ("text", "based"):
        if a[0] == b[0] == "based":
            return a[1:] == b[1:]
        ta, tb = _text_name(a), _text_name(b)
        return ta is not None and ta == tb
    ia, ib = _infinity_sign(a), _infinity_sign(b)
    if ia or ib:
        return ia == ib
    ea, eb = exact(a), exact(b)
    if ea is not None and eb is not None:
        return ea == eb
    # Compared over the union of symbols: sin^2 x + cos^2 x equals 1 although only one side has x.
    return _agree_numerically(a, b, sorted(free_symbols(a) | free_symbols(b)))


def _agree_numerically(a: tuple, b: tuple, names: list[str]) -> bool:
    rng = random.Random(_POINTS_RNG_SEED)
    agreed = 0
    for _ in range(N_POINTS if names else 1):
        # Positive reals off any simple lattice keep sqrt/log on their principal branch for both.
        env = {n: complex(rng.uniform(0.3, 1.7)) for n in names}
        try:
            va = numeric(a, env)
        except NumericError:
            va = None
        try:
            vb = numeric(b, env)
        except NumericError:
            vb = None
        if va is None or vb is None:
            if (va is None) != (vb is None):
                return False
            continue
        if abs(va - vb) > REL_TOL * max(1.0, abs(va), abs(vb)):
            return False
        agreed += 1
    return agreed > 0
