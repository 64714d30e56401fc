"""Per-optimizer-step metrics, summed over micro-batches and ranks, as JSON-serialisable dicts.

Statistics travel as (token-weighted sum, token count) pairs in a fixed key order, so one SUM all-reduce
gives exact step-level means whatever the split over ranks and micro-batches. Loss values are already
shares of the global mean (see masa.algo.losses), so they are summed as they are.

Row keys: step, step_in_round, lr, grad_norm, loss, policy_loss, bc_loss, tokens, seconds, tokens_per_s,
logprob_gap (first step only: mean |rollout - trainer| log-prob over the first micro-batch, or over all
samples with recompute_logprobs), and per path p in solution/meta: p/tokens, p/pg_loss (its share of the
policy loss), p/clip_frac_low, p/clip_frac_high, p/dual_clip_frac, p/approx_kl, p/kl_ref, p/entropy.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

_PATH_MEANS = ("clip_frac_low", "clip_frac_high", "dual_clip_frac", "approx_kl", "kl_ref", "entropy")
KEYS = (
    ["loss", "tokens", "gap_sum", "gap_n", "expert/tokens", "expert/bc_loss_sum"]
    + [f"{p}/{k}" for p in ("solution", "meta") for k in ("tokens", "pg_loss_sum")]
    + [f"{p}/{k}_sum" for p in ("solution", "meta") for k in _PATH_MEANS]
)

StepCallback = Callable[[dict], None]
# rank 0 prints each row on stdout after this prefix; the launching process parses it (on_step hook)


class StepAccumulator:
    """Accumulates one rank's micro-batch statistics of one optimizer step."""

    def __init__(self) -> None:
        self.sums: dict[str, float | torch.Tensor] = dict.fromkeys(KEYS, 0.0)
        self.first_gap: tuple[torch.Tensor, torch.Tensor] | None = None
        self.lr = 0.0
        self.grad_norm: float | torch.Tensor | None = None

    def add(self, stats: dict[str, torch.Tensor], *, loss: torch.Tensor, tokens: int) -> None:
        # kept on the device: one host sync per optimizer step (in reduce), not one per statistic
        for k, v in stats.items():
            if k not in self.sums:
                raise KeyError(f"unexpected statistic {k!r}; known: {', '.join(KEYS)}")
            self.sums[k] = self.sums[k] + v.detach().double()
        self.sums["loss"] = self.sums["loss"] + loss.detach().double()
        self.sums["tokens"] = self.sums["tokens"] + tokens

    def reduce(self, *, step: int, step_in_round: int, seconds: float, gap, device) -> dict:
        """All-reduce (SUM) over ranks and turn sums into the step's metrics row (identical on all ranks)."""
        import torch.distributed as dist

        if gap is not None:
            self.sums["gap_sum"], self.sums["gap_n"] = gap
        vec = torch.stack([torch.as_tensor(self.sums[k], dtype=torch.float64, device=device).reshape(())
                           for k in KEYS])
        if dist.is_initialized():
            dist.all_reduce(vec)
        s = dict(zip(KEYS, vec.cpu().tolist(), strict=True))
        gn = self.grad_norm
        row = {
            "step": step, "step_in_round": step_in_round, "lr": float(self.lr),
            "grad_norm": None if gn is None else float(gn),
            "loss": s["loss"],
            "policy_loss": s["solution/pg_loss_sum"] + s["meta/pg_loss_sum"],
            "bc_loss": s["expert/bc_loss_sum"], "expert/tokens": s["expert/tokens"],
            "tokens": s["tokens"], "seconds": seconds,
            "tokens_per_s": s["tokens"] / seconds if seconds > 0 else None,
            "logprob_gap": s["gap_sum"] / s["gap_n"] if gap is not None and s["gap_n"] > 0 else None,
        }
        for p in ("solution", "meta"):
            n = s[f"{p}/tokens"]
            row[f"{p}/tokens"] = n
            row[f"{p}/pg_loss"] = s[f"{p}/pg_loss_sum"]
            for k in _PATH_MEANS:
                row[f"{p}/{k}"] = s[f"{p}/{k}_sum"] / n if n > 0 else None
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
