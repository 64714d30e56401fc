"""Evaluation statistics: avg@k, the unbiased pass@k estimator, and rank correlation.

pass@k follows Chen et al. (2021, "Evaluating Large Language Models Trained on Code", Eq. 1): with n
samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a product so that it
stays exact in floating point for large n. avg@k is the plain mean correctness over the k samples,
as the MASA paper reports (its "Avg@32"). Pure: torch and the standard library.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pass_at_k(n: Tensor, c: Tensor, k: int) -> Tensor:
    """Unbiased pass@k per problem.

    n: [P] samples drawn per problem (n >= k), c: [P] correct among them. Returns [P] float.
    1 - prod_{i=n-c+1}^{n} (1 - k / i)  ==  1 - C(n-c, k) / C(n, k).
    """
    n = n.to(torch.float64)
    c = c.to(torch.float64)
    if k < 1 or bool((n < k).any()):
        raise ValueError(f"pass@{k} needs at least k samples per problem (min n = {int(n.min())})")
    i = torch.arange(1, int(n.max()) + 1, dtype=torch.float64)  # [N]
    # factor (1 - k/i) enters for i in (n - c, n]; every other i contributes 1
    use = (i[None, :] > (n - c)[:, None]) & (i[None, :] <= n[:, None])
    factors = torch.where(use, 1.0 - k / i[None, :], torch.ones_like(i)[None, :])
    return (1.0 - factors.prod(dim=1)).to(torch.float32)


def avg_at_k(correct: Tensor, valid: Tensor) -> Tensor:
    """Mean correctness over valid samples; correct, valid: [P, K] → scalar."""
    v = valid.to(torch.float32)
    return (correct.to(torch.float32) * v).sum() / v.sum().clamp_min(1.0)


def _ranks(x: Tensor) -> Tensor:
    """Ranks 1..n with ties given their average rank (as Spearman's rho requires)."""
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(x) + 1, dtype=torch.float64)
    # average the ranks of equal values
    uniq, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman's rank correlation of two [P] vectors: Pearson correlation of their tie-averaged
    ranks. NaN when either side is constant (no ranking to correlate)."""
    rx, ry = _ranks(x.to(torch.float64)), _ranks(y.to(torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.square().sum() * ry.square().sum()).sqrt()
    return torch.where(denom > 0, (rx * ry).sum() / denom, torch.full_like(denom, float("nan"))).to(torch.float32)


def outcome_spread(correct_counts: Tensor, k: int) -> dict[str, float]:
    """Shares of problems whose k samples were all wrong (c = 0), mixed (0 < c < k) and all right (c = k).

    correct_counts: [P] correct samples per problem. Mixed problems are where a group-normalised
    advantage (GRPO, MASA) has a signal; the other two give a zero-variance group.
    """
    c = correct_counts.to(torch.long)
    n = max(len(c), 1)
    return {"all_wrong": float((c == 0).sum()) / n, "mixed": float(((c > 0) & (c < k)).sum()) / n,
            "all_right": float((c == k).sum()) / n}
