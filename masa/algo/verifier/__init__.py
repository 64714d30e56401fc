"""Answer verifier: is a model's final answer mathematically equal to the reference answer?

Model output is untrusted: nothing in it is evaluated as code.  Answers are tokenised and parsed by
our own recursive-descent parser into a small AST (`parser`), then compared exactly over the
rationals, numerically at sample points, or structurally (`compare`).  Standard library only.

How this differs from the paper's grader (akatigre/MASA-RL `verl/utils/reward_score/grader.py`, the
Hendrycks/ToRA/DeepSeek-Math `math_equal`): that one hands model text to sympy's `parse_latex`,
`parse_expr` (which calls eval) and latex2sympy, accepts numbers within 1e-4 relative (3.1416 = pi),
accepts a percent either way (50 = 0.5 = 5000), equates equations whose lhs-rhs agree up to sign, and
starts one process per symbolic comparison for its time limit.  We never evaluate model text,
compare rationals exactly and irrationals at 1e-11, drop a percent sign without rescaling, compare
equations side by side, and keep a pool of killable workers (`pool`).

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
