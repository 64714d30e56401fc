"""The resume step: where a bounded run (a segment of rounds, docs/deploy.md "Bounded runs") picks up the
policy and score history that the previous segment left in the store. With a serving TrainJob
(`resources.train_service`) the previous run's last model may still be uploading: the job that trained
it outlives the run and holds it, so the pointer names the job (from the train step's sealed stats), and
this run's steps take the model over from it and continue from its engine (masa.runner.layout)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masa.config import RunConfig
from masa.runner.layout import HISTORY, Pointer, run_layout, train_stats_key, write_pointer
from masa.storage import MANIFEST, is_complete, open_store
from masa.train.spec import HeldBy


def _held(store, prefix: str) -> dict | None:
    """The train step's stats of the checkpoint at `prefix` when a serving TrainJob holds it (its
    identity and job), else None."""
    stats_key = train_stats_key(prefix)
    if not is_complete(store, stats_key.rsplit("/", 1)[0]):
        return None
    stats = json.loads(store.get_bytes(stats_key))
    return stats if stats.get("held_by") and stats.get("identity") else None


def resume_step(cfg: RunConfig, *, branch: str, round_idx: int, policy_ptr: str, history_out: str) -> dict[str, Any]:
    """A segment's start: point at round `round_idx - 1`'s checkpoint and copy its score history.
    Fails, naming the round, when that round has not finished (run the earlier segment first)."""
    layout, store, prev = run_layout(cfg), open_store(cfg.store), round_idx - 1
    prefix, hist = layout.part(branch, prev, "checkpoint"), layout.part(branch, prev, "history")
    held = None if store.exists(f"{prefix}/{MANIFEST}") else _held(store, prefix)
    needed = [f"{hist}/{MANIFEST}"] + ([] if held else [f"{prefix}/{MANIFEST}"])
    missing = [k for k in needed if not store.exists(k)]
    if missing:
        raise FileNotFoundError(f"{branch} round {prev + 1} has not finished ({store.uri(missing[0])} is missing): "
                                f"run the segment that ends with round {prev + 1} first")
    history = json.loads(store.get_bytes(f"{hist}/{HISTORY}"))
    write_pointer(policy_ptr, Pointer(store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=prev,
                                      digest=held["identity"] if held else None,
                                      held_by=HeldBy.from_dict(held["held_by"]) if held else None))
    Path(history_out).write_text(json.dumps(history, indent=1))
    return {"rounds_done": len(history), "from_trainer": int(held is not None)}
