"""The resume step: where a bounded run (a segment of rounds, docs/deploy.md "Bounded runs") picks up the
policy and score history that the previous segment left in the store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.runner.layout import HISTORY, Pointer, run_layout, write_pointer
from masa.storage import MANIFEST, open_store


def resume_step(cfg: RunConfig, *, branch: str, round_idx: int, policy_ptr: str, history_out: str) -> dict[str, Any]:
    """A segment's start: point at round `round_idx - 1`'s checkpoint and copy its score history.
    Fails, naming the round, when that round has not finished (run the earlier segment first)."""
    layout, store, prev = run_layout(cfg), open_store(cfg.store), round_idx - 1
    prefix, hist = layout.part(branch, prev, "checkpoint"), layout.part(branch, prev, "history")
    missing = [k for k in (f"{prefix}/{MANIFEST}", f"{hist}/{MANIFEST}") if not store.exists(k)]
    if missing:
        raise FileNotFoundError(f"{branch} round {prev + 1} has not finished ({store.uri(missing[0])} is missing): "
                                f"run the segment that ends with round {prev + 1} first")
    history = json.loads(store.get_bytes(f"{hist}/{HISTORY}"))
    write_pointer(policy_ptr, Pointer(store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=prev))
    Path(history_out).write_text(json.dumps(history, indent=1))
    return {"rounds_done": len(history)}
