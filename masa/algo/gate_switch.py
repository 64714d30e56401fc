"""The gating switch's signal loss, in plain Python: the report step pools it over a run's rounds and
must not load torch (tests/test_step_imports.py); `masa.algo.gating` uses it for the switch itself.

How it differs from vanilla GRPO and from the paper's code: neither has a gating switch (see
`masa.algo.gating`); this check is ours.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["signal_loss"]


def signal_loss(signal_history: Sequence[tuple[int, int, int, int]]) -> float | None:
    """The share of the mixed groups that the gate skips, or would skip, pooled over rounds of
    (mixed_candidates, mixed, candidates, gated) from `gate_signal` and the round's skipped prompts:

        skipped = sum over rounds of  mixed_candidates * (candidates + gated) / candidates
        kept    = sum over rounds of  mixed - mixed_candidates
        loss    = skipped / (skipped + kept)

    While gating is off every would-be-skipped prompt is rolled out (gated = 0, the scale is 1). While it
    is on, the rolled-out candidates are the explored ones, a uniform draw of all it skipped
    (`apply_exploration`), so their mixed count scaled by (candidates + gated) / candidates estimates the
    mixed groups among all of them. A round that skipped prompts and explored none says nothing about what
    it skipped and is left out. None when no round counted a mixed group: no evidence.
    """
    bad = [i for i, (mc, m, c, g) in enumerate(signal_history) if not (0 <= mc <= min(m, c) and g >= 0)]
    if bad:
        raise ValueError(f"signal_history entries must be (mixed_candidates, mixed, candidates, gated) with "
                         f"0 <= mixed_candidates <= min(mixed, candidates) and gated >= 0; bad at rounds {bad}")
    skipped = kept = 0.0
    for mc, m, c, g in signal_history:
        if g and not c:
            continue
        skipped += mc * (c + g) / c if c else 0.0
        kept += m - mc
    return skipped / (skipped + kept) if skipped + kept > 0 else None
