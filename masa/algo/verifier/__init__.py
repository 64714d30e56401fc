"""Answer verifier: is a model's final answer mathematically equal to the reference answer?

Model output is untrusted: nothing in it is evaluated as code.  Answers are tokenised and parsed by
our own recursive-descent parser into a small AST (`parser`), then compared exactly over the
rationals, numerically at sample points, or structurally (`compare`).  Unlike the paper's code and
verl's `math_dapo`/`prime_math` scorers (string normalisation, or sympy's `parse_expr`/latex2sympy with
`signal.alarm` time limits), we never call sympy or eval, and the time limit is enforced by killing
worker processes, so it works from any thread.  Standard library only.

Public API:
    Verdict(correct, extracted, error)
    extract_answer(response) -> str | None
    is_equivalent(pred, gold) -> bool                      # in process, no time limit
    verify(response, answer) -> Verdict                    # in process, no time limit
    verify_batch(pairs, *, timeout_s=5.0, workers=None) -> list[Verdict]   # killable workers
"""

from masa.algo.verifier.extract import extract_answer
from masa.algo.verifier.judge import Verdict, is_equivalent, verify
from masa.algo.verifier.pool import verify_batch

__all__ = ["Verdict", "extract_answer", "is_equivalent", "verify", "verify_batch"]
