"""The `chain` toy task: several additions and subtractions in a row, each worked column by column.

Why a second task (issue 15): the `columns` task's solutions (~57 tokens) are about as long as a meta
prediction (~46), so the meta path costs ~40% of a MASA round and gating and cutoff cannot pay for it.
In the paper's regime a solution runs to thousands of tokens and a prediction to hundreds. Here a
problem chains 1..`max_ops` operations ("What is 47 + 385 - 129?"); the solution works each one as a
step of its own, in the `columns` task's column lines, and carries the running value into the next
(each step names its operation, and the column lines their carries and borrows, so the notion words
appear in a solution exactly when it uses them, as the meta path's notion reward needs):

    Step 1, addition: 47 + 385.
    ones: 7+5=12, write 2, carry 1.
    tens: 4+8+1=13, write 3, carry 1.
    hundreds: 0+3+1=4, write 4.
    So 47 + 385 = 432.
    Step 2, subtraction: 432 - 129.
    ...
    So 432 - 129 = 303.
    Answer: \\boxed{303}

Difficulty grows with the number of steps (an error anywhere is carried to the end) and of columns, so
a warm-started model solves one-step problems nearly always and three-step ones rarely: the mix of
all-right and all-wrong groups that predictive gating acts on. The meta reasoning is one short line
("3 steps, 2 carries, 1 borrow."), so a prediction stays short while solutions grow with the steps.
Running values stay >= 0 (a subtraction that would go below zero is drawn as an addition).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from masa.toy.task import _add_lines, _random_number, _sub_lines

OPS = ("+", "-")
NAMES = {"+": "addition", "-": "subtraction"}


@dataclass(frozen=True)
class ChainProblem:
    """`terms[0] ops[0] terms[1] ops[1] ...`, evaluated left to right; everything else derives from it."""

    terms: tuple[int, ...]
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.terms) != len(self.ops) + 1 or not self.ops:
            raise ValueError(f"a chain needs n >= 1 operations and n + 1 terms, got {self.terms} {self.ops}")
        if any(op not in OPS for op in self.ops) or any(t < 0 for t in self.terms):
            raise ValueError(f"operations must be in {OPS} and terms >= 0, got {self.terms} {self.ops}")
        if any(v < 0 for v in self.values):
            raise ValueError(f"a running value goes below zero: {self.question}")

    @property
    def values(self) -> tuple[int, ...]:
        """The running value after each operation."""
        out, v = [], self.terms[0]
        for op, t in zip(self.ops, self.terms[1:], strict=True):
            v = v + t if op == "+" else v - t
            out.append(v)
        return tuple(out)

    @property
    def question(self) -> str:
        expr = " ".join([str(self.terms[0]), *(f"{op} {t}" for op, t in zip(self.ops, self.terms[1:], strict=True))])
        return f"What is {expr}?"

    @property
    def answer(self) -> int:
        return self.values[-1]

    @property
    def target(self) -> str:
        return str(self.answer)

    def _steps(self) -> list[tuple[int, str, int, int, list[str], int]]:
        """(left operand, op, right operand, result, column lines, regroupings) of each step."""
        lefts = (self.terms[0], *self.values[:-1])
        return [(a, op, b, v, *(_add_lines if op == "+" else _sub_lines)(a, b))
                for a, op, b, v in zip(lefts, self.ops, self.terms[1:], self.values, strict=True)]

    @property
    def solution(self) -> str:
        text = []
        for i, (a, op, b, v, lines, _) in enumerate(self._steps()):
            text += [f"Step {i + 1}, {NAMES[op]}: {a} {op} {b}.", *lines, f"So {a} {op} {b} = {v}."]
        return "\n".join([*text, f"Answer: \\boxed{{{self.answer}}}"])

    @property
    def carries(self) -> int:
        return sum(step[-1] for step in self._steps() if step[1] == "+")

    @property
    def borrows(self) -> int:
        return sum(step[-1] for step in self._steps() if step[1] == "-")

    @property
    def regroups(self) -> int:
        return self.carries + self.borrows

    @property
    def notions(self) -> tuple[str, ...]:
        """The words the solution uses, in a fixed order (the notion reward's ground truth)."""
        used = [NAMES[op] for op in OPS if op in self.ops]
        return (*used, *(["carry"] if self.carries else []), *(["borrow"] if self.borrows else []))

    @property
    def n_columns(self) -> int:
        return max(len(str(x)) for x in (*self.terms, *self.values))

    @property
    def level(self) -> int:
        """Difficulty 1..5: steps plus columns of the widest number, less two (a proxy)."""
        return max(1, min(5, len(self.ops) + self.n_columns - 2))

    @property
    def kind(self) -> str:
        return f"{len(self.ops)}-step"

    @property
    def reasoning(self) -> str:
        """The meta path's one-line reasoning in the warm start: steps and regroupings."""
        def count(n: int, word: str, plural: str) -> str:
            return f"{n} {word if n == 1 else plural}"
        parts = [count(len(self.ops), "step", "steps"), count(self.carries, "carry", "carries"),
                 count(self.borrows, "borrow", "borrows")]
        return ", ".join(parts) + "."


def random_chain(rng: random.Random, *, max_ops: int, max_digits: int) -> ChainProblem:
    """Steps uniform in 1..max_ops; each term's digit count uniform in 1..max_digits, its value uniform."""
    n = rng.randint(1, max_ops)
    terms = [_random_number(rng, rng.randint(1, max_digits))]
    ops, v = [], terms[0]
    for _ in range(n):
        t = _random_number(rng, rng.randint(1, max_digits))
        op = rng.choice(OPS)
        if op == "-" and t > v:
            op = "+"
        v = v + t if op == "+" else v - t
        terms.append(t)
        ops.append(op)
    # ToyRecipe keeps max_digits and max_ops <= 4: values stay under 5 * 9999, within masa.toy.task.COLUMNS
    return ChainProblem(tuple(terms), tuple(ops))
