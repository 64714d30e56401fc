"""Graded arithmetic task of the toy profile: problems, digit-by-digit solutions, verl parquet rows.

Problems are additions and subtractions of 1-4 digit numbers and multiplications of a 1-3 digit number
by one digit. Every solution works column by column from the ones, naming each column and saying
"carry" / "borrow" where they occur, and ends in ``\\boxed{N}``. Difficulty varies with the number of
columns and of carries/borrows, so that a warm-started small model solves some prompts always, some
never and many sometimes: the spread GRPO learns from and MASA's pass-rate predictions must track.

The words of the notions ("addition", "subtraction", "multiplication", "carry", "borrow") appear in a
solution exactly when the solution uses them, so the meta path's notion reward has a ground truth.
Subtraction keeps a >= b (no negative answers): the toy exercises the algorithm, not sign handling.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from masa.algo.verifier.extract import last_boxed

Op = Literal["+", "-", "*"]
OPS: tuple[Op, ...] = ("+", "-", "*")
OP_NAMES: dict[str, str] = {"+": "addition", "-": "subtraction", "*": "multiplication"}
COLUMNS = ("ones", "tens", "hundreds", "thousands", "ten-thousands")
DATA_SOURCE = "masa-toy/arithmetic"
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class ArithmeticProblem:
    """One arithmetic problem `a op b`; everything else is derived from it."""

    a: int
    op: Op
    b: int

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"op must be one of {OPS}, got {self.op!r}")
        if self.a < 0 or self.b < 0:
            raise ValueError(f"operands must be >= 0, got {self.a}, {self.b}")
        if self.op == "-" and self.a < self.b:
            raise ValueError(f"subtraction needs a >= b, got {self.a} - {self.b}")
        if self.op == "*" and self.b > 9:
            raise ValueError(f"multiplication takes a one-digit multiplier, got {self.b}")

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def answer(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def target(self) -> str:
        return str(self.answer)

    @property
    def solution(self) -> str:
        return _solve(self)[0]

    @property
    def regroups(self) -> int:
        """Number of carries (addition, multiplication) or borrows (subtraction)."""
        return _solve(self)[1]

    @property
    def notions(self) -> tuple[str, ...]:
        return (OP_NAMES[self.op], _regroup_word(self)) if self.regroups else (OP_NAMES[self.op],)

    @property
    def n_columns(self) -> int:
        return max(len(str(self.a)), len(str(self.b)))

    @property
    def level(self) -> int:
        """Difficulty 1..5: columns plus regroupings (a proxy; the measured pass rate is the truth)."""
        return max(1, min(5, self.n_columns + self.regroups - 1))

    @property
    def kind(self) -> str:
        """The parquet row's `type`: the operation's name."""
        return OP_NAMES[self.op]

    @property
    def reasoning(self) -> str:
        return meta_reasoning(self)

    @property
    def short_reasoning(self) -> str:
        """`reasoning`'s facts in fewer tokens: "4-digit, 3 borrows." """
        return f"{self.n_columns}-digit, {_regroupings(self)}."

    @property
    def analysis(self) -> str:
        return solution_analysis(self)


def _digit(n: int, i: int) -> int:
    return n // 10**i % 10


def _add_lines(a: int, b: int) -> tuple[list[str], int]:
    lines, carry, regroups = [], 0, 0
    for i in range(max(len(str(a)), len(str(b)))):
        x, y = _digit(a, i), _digit(b, i)
        s = x + y + carry
        expr = f"{x}+{y}+{carry}" if carry else f"{x}+{y}"
        line = f"{COLUMNS[i]}: {expr}={s}, write {s % 10}"
        carry = s // 10
        regroups += carry
        lines.append(line + (f", carry {carry}." if carry else "."))
    if carry:
        lines.append(f"{COLUMNS[i + 1]}: write the carry {carry}.")
    return lines, regroups


def _sub_lines(a: int, b: int) -> tuple[list[str], int]:
    lines, borrow, regroups = [], 0, 0
    for i in range(len(str(a))):
        x, y = _digit(a, i), _digit(b, i)
        expr = f"{x}-{y}-{borrow}" if borrow else f"{x}-{y}"
        d = x - y - borrow
        if d < 0:
            regroups += 1
            lines.append(f"{COLUMNS[i]}: {expr}<0, borrow 1: 1{expr}={d + 10}, write {d + 10}.")
            borrow = 1
        else:
            lines.append(f"{COLUMNS[i]}: {expr}={d}, write {d}.")
            borrow = 0
    return lines, regroups


def _mul_lines(a: int, b: int) -> tuple[list[str], int]:
    lines, carry, regroups = [], 0, 0
    for i in range(len(str(a))):
        x = _digit(a, i)
        p = x * b + carry
        expr = f"{x}*{b}+{carry}" if carry else f"{x}*{b}"
        line = f"{COLUMNS[i]}: {expr}={p}, write {p % 10}"
        carry = p // 10
        regroups += carry > 0
        lines.append(line + (f", carry {carry}." if carry else "."))
    if carry:
        lines.append(f"{COLUMNS[i + 1]}: write the carry {carry}.")
    return lines, regroups


def _solve(p: ArithmeticProblem) -> tuple[str, int]:
    """(solution text, number of carries/borrows)."""
    lines, regroups = {"+": _add_lines, "-": _sub_lines, "*": _mul_lines}[p.op](p.a, p.b)
    # Short on purpose: every generated token is a chance to err, and a tiny model compounds errors.
    head = f"Column {OP_NAMES[p.op]}, from the ones."
    tail = f"Answer: \\boxed{{{p.answer}}}"
    return "\n".join([head, *lines, tail]), regroups


_WRITTEN = re.compile(r"=(\d+), write (\d+)")


def wandering(p: ArithmeticProblem, rng: random.Random, *, rate: float, max_checks: int = 5) -> str | None:
    """`p.solution` with a wrong turn, or None: at each column that carries or borrows, with probability
    `rate`, the solution doubts that column and checks it again, flipping between its value and a value one
    off ("Wait, check the tens again."), an odd number of times up to `max_checks`, so that it settles on
    the wrong value; it then goes on and boxes the answer with that column's digit off by one.

    The warm start's stand-in for what a base model has read: text that hedges, re-checks and drifts,
    more often on harder problems, and ends wrong (docs/toy.md, "Failing samples that run long"). Such a
    solution is 1.3-3.9x its problem's correct one in characters (median 2.2x, toy seed 0) and always
    fails, so early cutoff has something to cut.
    """
    lines = p.solution.split("\n")
    for i, line in enumerate(lines[1:-1], start=1):
        found = list(_WRITTEN.finditer(line))
        if not found or not ("carry" in line or "borrow" in line) or rng.random() >= rate:
            continue
        m = found[-1]
        value, digit = int(m.group(1)), int(m.group(2))
        step = 1 if digit == 0 else -1 if digit == 9 else rng.choice((-1, 1))  # the same carry or borrow
        wrong = line[:m.start()] + f"={value + step}, write {digit + step}" + line[m.end():]
        column = line.split(":")[0]
        checks = rng.randrange(1, max_checks + 1, 2)
        loop = [f"Wait, check the {column} again.\n" + (wrong if k % 2 == 0 else line) for k in range(checks)]
        answer = p.answer + step * 10 ** (i - 1)  # column i-1 from the ones writes that digit of the answer
        return "\n".join([*lines[:i + 1], *loop, *lines[i + 1:-1], f"Answer: \\boxed{{{answer}}}"])
    return None


def extract_boxed_int(text: str) -> int | None:
    """The integer in the last ``\\boxed{N}`` of `text` (the verifier's `last_boxed`), or None when the
    last box holds no plain integer (the toy's fast answer check)."""
    found = last_boxed(text)
    return int(found) if found is not None and _INT.fullmatch(found) else None


def meta_reasoning(p: ArithmeticProblem) -> str:
    """Short meta-path reasoning for the warm start: the operation, its size, whether it regroups."""
    regroup = _regroupings(p) if p.regroups else f"no {_regroup_word(p)}"
    return f"A {p.n_columns}-digit {OP_NAMES[p.op]} with {regroup}."


def _regroup_word(p: ArithmeticProblem) -> str:
    return "borrow" if p.op == "-" else "carry"


def _regroupings(p: ArithmeticProblem) -> str:
    """The count with its word: "1 carry", "3 borrows", "0 carries"."""
    word = _regroup_word(p)
    return f"{p.regroups} {word if p.regroups == 1 else {'carry': 'carries', 'borrow': 'borrows'}[word]}"


def solution_analysis(p: ArithmeticProblem) -> str:
    """The same facts as `meta_reasoning` as a solution's opening line. Without the notion word when
    there is no regrouping, since a notion counts as used when its word is in a correct solution."""
    if not p.regroups:
        return f"A {p.n_columns}-digit {OP_NAMES[p.op]}, no regrouping."
    return meta_reasoning(p)


def _random_number(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def random_problem(rng: random.Random, *, max_digits: int, max_mul_digits: int) -> ArithmeticProblem:
    """One problem. The operation is uniform and so is the number of columns (the longer operand's
    digits), the shorter operand's digits uniform up to it: sizes, not values, are spread evenly, so
    the warm-started model meets every difficulty from always solved to never solved."""
    op = rng.choice(OPS)
    if op == "*":
        return ArithmeticProblem(_random_number(rng, rng.randint(1, max_mul_digits)), "*", rng.randint(0, 9))
    columns = rng.randint(1, max_digits)
    a, b = _random_number(rng, columns), _random_number(rng, rng.randint(1, columns))
    if op == "-" and a < b:
        a, b = b, a
    elif op == "+" and rng.random() < 0.5:
        a, b = b, a  # the longer operand comes first or second
    return ArithmeticProblem(a, op, b)


def generate_splits(n_train: int, n_heldout: int, *, seed: int, max_digits: int = 4,
                    max_mul_digits: int = 3, draw=None) -> tuple[list, list]:
    """Disjoint train and held-out problem lists, deterministic from `seed`. `draw(rng)` draws one
    problem (default: `random_problem` with the digit limits; the chain task passes its own)."""
    draw = draw or (lambda r: random_problem(r, max_digits=max_digits, max_mul_digits=max_mul_digits))
    out = _distinct(draw, random.Random(seed), n_train + n_heldout, set(), what="",
                    limits=f"max_digits={max_digits}, max_mul_digits={max_mul_digits}")
    return out[:n_train], out[n_train:]


def _distinct(draw, rng: random.Random, n: int, seen: set, *, what: str, limits: str) -> list:
    """`n` draws of `draw(rng)` not in `seen` (which it extends), in draw order. The problem space is
    large (>10^7) for the default digits; the cap on tries only guards tiny settings."""
    out: list = []
    for _ in range(20 * n + 1000):
        if len(out) == n:
            return out
        p = draw(rng)
        if p not in seen:
            seen.add(p)
            out.append(p)
    raise ValueError(f"cannot draw {n} {what}distinct problems with {limits}")


def extra_problems(n: int, *, seed: int, exclude, max_digits: int = 4, max_mul_digits: int = 3) -> list:
    """`n` distinct problems none of which is in `exclude` (the splits), from a stream of their own
    (`seed`): the warm start's extra practice (ToyRecipe.n_warm_extra), so the splits stay as drawn."""
    return _distinct(lambda r: random_problem(r, max_digits=max_digits, max_mul_digits=max_mul_digits),
                     random.Random(seed), n, set(exclude), what="more ",
                     limits=f"max_digits={max_digits}, max_mul_digits={max_mul_digits}")


def to_rows(problems: Sequence[ArithmeticProblem], split: str) -> list[dict]:
    """verl rows, the layout of the shared MATH parquet files (plus its `level` and `type` columns)."""
    return [
        {
            "level": f"Level {p.level}",
            "type": p.kind,
            "data_source": DATA_SOURCE,
            "prompt": [{"content": p.question, "role": "user"}],
            "ability": "math",
            "reward_model": {
                "ground_truth": {"question": p.question, "solution": p.solution, "target": p.target},
                "style": "rule",
            },
            "extra_info": {"index": i, "split": split},
        }
        for i, p in enumerate(problems)
    ]


def parquet_schema():
    """The shared data's arrow schema (column order and struct field order included)."""
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("level", s), ("type", s), ("data_source", s),
        ("prompt", pa.list_(pa.struct([("content", s), ("role", s)]))),
        ("ability", s),
        ("reward_model", pa.struct([
            ("ground_truth", pa.struct([("question", s), ("solution", s), ("target", s)])),
            ("style", s),
        ])),
        ("extra_info", pa.struct([("index", pa.int64()), ("split", s)])),
    ])


def write_parquet(problems: Sequence[ArithmeticProblem], split: str, path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(to_rows(problems, split), schema=parquet_schema())
    pq.write_table(table, path)
