"""The promotion decision: does a candidate model replace the one in service?

Not in the paper: this is the scheduled-retraining gate (docs/promotion.md). A candidate is promoted
only when its benchmark accuracy beats the current model's by more than the noise of the comparison
and its meta-awareness (pass-rate MAE, lower is better) is not worse by more than that metric's
noise. The noise of a difference of two independent estimates is z * sqrt(se_a^2 + se_b^2); with
z = 1.96 that is the half-width of the difference's 95% interval. Pure functions over floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    """One model's benchmark figures: accuracy (avg@k) and pass-rate MAE, each with its standard
    error (None = unknown)."""

    accuracy: float
    accuracy_stderr: float | None = None
    pass_rate_mae: float | None = None
    pass_rate_mae_stderr: float | None = None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    margin: float  # the accuracy gain the candidate had to exceed


def binomial_stderr(p: float, n: int) -> float:
    """sqrt(p(1-p)/n): the standard error of a proportion over `n` independent samples. A fallback when
    the evaluation gave no per-problem standard error (it understates it when samples of one problem
    are correlated)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 0.0


def noise(se_a: float | None, se_b: float | None, z: float) -> float:
    """z * sqrt(se_a^2 + se_b^2); an unknown error counts as 0."""
    return z * math.sqrt((se_a or 0.0) ** 2 + (se_b or 0.0) ** 2)


def combine(parts: Sequence[Figures]) -> Figures:
    """The mean over benchmarks, each weighted equally: mean values, stderr sqrt(sum se^2) / B
    (independent benchmarks); an MAE or error missing on any benchmark is missing in the mean."""
    if not parts:
        raise ValueError("no benchmark figures to combine")
    b = len(parts)

    def mean(xs):
        return None if any(x is None for x in xs) else sum(xs) / b

    def se(xs):
        return None if any(x is None for x in xs) else math.sqrt(sum(x * x for x in xs)) / b

    return Figures(accuracy=sum(p.accuracy for p in parts) / b, accuracy_stderr=se([p.accuracy_stderr for p in parts]),
                   pass_rate_mae=mean([p.pass_rate_mae for p in parts]),
                   pass_rate_mae_stderr=se([p.pass_rate_mae_stderr for p in parts]))


def decide(candidate: Figures, current: Figures | None, *, margin: float | None = None,
           z: float = 1.96) -> Decision:
    """Promote `candidate` over `current` (None: nothing promoted yet, so promote)?

    margin None: noise(candidate.accuracy_stderr, current.accuracy_stderr, z). The candidate must gain
    strictly more than `margin` in accuracy, and its MAE may rise by at most the MAE noise (when both
    MAEs are known; an unknown MAE on the candidate's side when the current has one counts as worse).
    """
    if current is None:
        return Decision(True, "first promoted model: nothing to compare with", 0.0)
    m = noise(candidate.accuracy_stderr, current.accuracy_stderr, z) if margin is None else margin
    gain = candidate.accuracy - current.accuracy
    if gain <= m:
        return Decision(False, f"accuracy {candidate.accuracy:.4f} vs {current.accuracy:.4f}: gain {gain:+.4f} "
                               f"is not above the margin {m:.4f}", m)
    if current.pass_rate_mae is not None:
        if candidate.pass_rate_mae is None:
            return Decision(False, "the candidate has no pass-rate MAE (no meta prediction parsed); the current "
                                   f"model has {current.pass_rate_mae:.4f}", m)
        tol = noise(candidate.pass_rate_mae_stderr, current.pass_rate_mae_stderr, z)
        rise = candidate.pass_rate_mae - current.pass_rate_mae
        if rise > tol:
            return Decision(False, f"meta-awareness got worse: pass-rate MAE {candidate.pass_rate_mae:.4f} vs "
                                   f"{current.pass_rate_mae:.4f} (+{rise:.4f} > noise {tol:.4f})", m)
    return Decision(True, f"accuracy {candidate.accuracy:.4f} vs {current.accuracy:.4f}: gain {gain:+.4f} "
                          f"above the margin {m:.4f}; meta-awareness not worse", m)
