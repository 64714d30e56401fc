"""Evaluation statistics: avg@k, the unbiased pass@k estimator, and rank correlation.

pass@k follows Chen et al. (2021, "Evaluating Large Language Models Trained on Code", Eq. 1): with n
samples of which c are correct, pass@k = 1 - C(n-c, k) / C(n, k), computed as a product so that it
stays exact in floating point for large n. avg@k is the plain mean correctness over the k samples,
as the MASA paper reports (its "Avg@32"). Pure: torch and the standard library.

Standard errors are taken over *problems*, not samples: the k samples of one problem share its
difficulty, so treating P*k samples as independent would understate the error (the between-problem
spread dominates once k >= 4). `clustered_mean_stderr` is the ratio (cluster) estimator for a mean of
samples grouped by problem; with equal group sizes it is the plain sample SD of the per-problem means
over sqrt(P). The paper reports no intervals; the report prints value +- 1.96 * stderr.
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


def clustered_mean_stderr(sums: Tensor, counts: Tensor) -> Tensor:
    """Standard error, over problems, of the pooled sample mean  m = sum(sums) / sum(counts).

    sums: [P] sum of one problem's sample values, counts: [P] its number of samples (problems with no
    sample are left out). Returns a scalar float32; NaN with fewer than two problems.

        SE^2 = P / (P - 1) * sum_i (sums_i - m * counts_i)^2 / (sum_i counts_i)^2

    the linearised (delta-method) variance of a ratio of sums, with the usual P/(P-1) small-sample
    factor. With every counts_i = n: sums_i - m n = n (mean_i - m), so
    SE^2 = P/(P-1) * n^2 sum (mean_i - m)^2 / (P n)^2 = [sum (mean_i - m)^2 / (P-1)] / P = s^2 / P,
    the sample variance of the per-problem means over P.
    """
    keep = counts > 0
    s, n = sums[keep].to(torch.float64), counts[keep].to(torch.float64)
    p = s.numel()
    if p < 2:
        return torch.tensor(float("nan"))
    m = s.sum() / n.sum()
    var = p / (p - 1) * (s - m * n).square().sum() / n.sum().square()
    return var.sqrt().to(torch.float32)


def accuracy_stderr(correct: Tensor, valid: Tensor) -> Tensor:
    """Standard error over problems of `avg_at_k(correct, valid)`; correct, valid: [P, K] -> scalar.

    All samples valid: the sample SD of the per-problem mean correctness over sqrt(P)."""
    v = valid.to(torch.float64)
    return clustered_mean_stderr((correct.to(torch.float64) * v).sum(1), v.sum(1))


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
