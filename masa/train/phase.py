"""Behaviour cloning as a separate phase (`TrainConfig.bc_mode: phase`): the expert buffer and its LR.

In joint mode (the default) experts are part of every optimizer step (masa.train.objective). In phase
mode, as the paper's released code (`meta_sft_fit`, off in its launch script), the round's experts join
a first-in-first-out buffer carried from round to round in the DeepSpeed state directory
(`expert_buffer.parquet` beside train_state.json, so it travels, is verified and is pruned with the
optimizer state). After the round's policy steps, each full batch of `bc_phase_batch` experts is cloned
in `bc_phase_steps` steps over the whole batch, with the same AdamW (its moments shared, as released)
at `bc_phase_lr` on a cosine schedule (`masa.algo.experts.phase_lr`); the policy LR schedule is
neither stepped nor changed by the phase.

How we differ from the released code: every full batch in the buffer is cloned (released: at most one
per RL step), the buffer lasts the whole run (released: emptied each epoch), and the phase runs at
`bc_phase_lr` (released: torch's LambdaLR keeps the `initial_lr` the actor's scheduler set, so its
cosine starts from the actor's LR whatever `meta_sft.optim.lr` says).

Ours only: the phase's own AdamW moments (`bc_phase_moments: own`). Released, the phase steps on the
policy's moments. Its BC gradients are 3-6x the policy's (toy, 2026-12-06), so they stay in the second
moment (beta2 0.999 remembers ~1,000 steps) and divide every later policy step: on the toy the policy's
per-parameter Adam denominator sqrt(v) was 1.7x GRPO's (median over parameters, rounds 7-21), i.e. the
solutions trained at ~0.6x the learning rate GRPO's did. With `own`, the phase swaps in a second set of
moments (first, second, step count) for its steps and puts the policy's back after; that set is kept
per rank beside the optimizer state (MOMENTS_FILE) and, in the trainer service, with the engine.

Ours only: an optional anchor (`bc_phase_anchor` > 0). Each phase batch then also holds, ahead of
its experts, as many of the round's solution rollouts (`anchor_rows`: zero advantage, so no
policy-gradient term), whose log-probs under the policy as the batch's steps find it become their reference; every
phase step adds `bc_phase_anchor` x the k3 KL of those tokens to it. Cloning the meta experts hard
enough to calibrate the meta path otherwise moves the layers the solutions use (docs/toy.md,
"Shorter predictions", 5.: -20 points of pass rate unanchored, -4 anchored, on the toy).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from masa.algo.experts import phase_batches
from masa.train.data import TrainSample, load_expert_samples

BUFFER_FILE = "expert_buffer.parquet"
MOMENTS_FILE = "phase_moments_rank{rank}.pt"
_SCHEMA = pa.schema([("prompt_token_ids", pa.list_(pa.int64())), ("response_token_ids", pa.list_(pa.int64())),
                     ("token_weights", pa.list_(pa.float32()))])


def load_buffer(state_dir: str | Path | None) -> list[TrainSample]:
    """The experts a previous round left in the buffer (oldest first); none without a state or file."""
    f = Path(state_dir) / BUFFER_FILE if state_dir else None
    return load_expert_samples(f) if f is not None and f.is_file() else []


def save_buffer(samples: list[TrainSample], state_dir: str | Path) -> None:
    """Write the buffer (experts.parquet's columns, so `load_expert_samples` reads it back)."""
    rows = [{"prompt_token_ids": list(s.prompt), "response_token_ids": list(s.response),
             "token_weights": None if s.weights is None else list(s.weights)} for s in samples]
    Path(state_dir).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=_SCHEMA), Path(state_dir) / BUFFER_FILE)


def fill(buffer: list[TrainSample], new: list[TrainSample], *, batch: int) -> tuple[list[list[TrainSample]], list[TrainSample]]:
    """(the full batches to clone now, in order; what stays in the buffer) after adding `new` to it."""
    pool = buffer + new
    batches, left = phase_batches(len(buffer), len(new), batch=batch)
    return [[pool[i] for i in b] for b in batches], [pool[i] for i in left]


def anchor_rows(samples: list[TrainSample], n: int, *, seed: int) -> list[TrainSample]:
    """`n` of the solution rows in `samples` (all of them if fewer), drawn without replacement from
    `seed`, with zero advantage: they carry only the anchor's KL into a phase step."""
    sols = [s for s in samples if s.path == "solution"]
    pick = random.Random(seed).sample(sols, min(n, len(sols)))
    return [dataclasses.replace(s, advantage=0.0, token_advantages=None) for s in pick]


@contextmanager
def own_lr(engine) -> Iterator[None]:
    """Let the caller set the optimizer's LR per step: the engine's LR scheduler is detached (so
    `engine.step()` does not advance the policy schedule) and the LRs it had are restored after."""
    groups = engine.optimizer.param_groups
    saved, sched = [g["lr"] for g in groups], engine.lr_scheduler
    engine.lr_scheduler = None
    try:
        yield
    finally:
        engine.lr_scheduler = sched
        for g, lr in zip(groups, saved, strict=True):
            g["lr"] = lr


def _adamw(engine):
    """The torch AdamW under DeepSpeed's ZeRO optimizer: its state is keyed by this rank's partitions."""
    return getattr(engine.optimizer, "optimizer", engine.optimizer)


@contextmanager
def own_moments(engine, moments: list[dict] | None) -> Iterator[list[dict]]:
    """Inside, the optimizer steps on the phase's AdamW state (`moments`, one dict per parameter tensor
    in param-group order, as a previous phase left them; None or a mismatched set: fresh, which AdamW
    initialises at its first step); the policy's state is set aside and put back on exit. Yields a list
    that holds, on exit, the phase's state to carry to the next phase."""
    opt = _adamw(engine)
    params = [q for g in opt.param_groups for q in g["params"]]
    policy = {q: opt.state.pop(q) for q in params if q in opt.state}
    if moments is not None and _fits(moments, params):
        for q, st in zip(params, moments, strict=True):
            if st:  # AdamW keeps `step` on the CPU, the moments beside their parameter
                opt.state[q] = {k: v if k == "step" else v.to(q.device) for k, v in st.items()}
    out: list[dict] = []
    try:
        yield out
    finally:
        out.extend(opt.state.pop(q, {}) for q in params)
        opt.state.update(policy)


def _fits(moments: list[dict], params: list) -> bool:
    """Whether a saved set belongs to these partitions (ZeRO partitions change with the world size)."""
    return len(moments) == len(params) and all(
        not st or st["exp_avg"].shape == q.shape for st, q in zip(moments, params, strict=True))


def load_moments(state_dir: str | Path | None, rank: int) -> list[dict] | None:
    """The phase moments this rank saved with a previous round's state; None without them."""
    f = Path(state_dir) / MOMENTS_FILE.format(rank=rank) if state_dir else None
    return torch.load(f, map_location="cpu", weights_only=True) if f is not None and f.is_file() else None


def save_moments(moments: list[dict] | None, state_dir: str | Path, rank: int) -> None:
    if moments is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        torch.save(moments, Path(state_dir) / MOMENTS_FILE.format(rank=rank))
