"""`verify_batch`: judge many (response, answer) pairs in killable worker processes.

Each worker is a `multiprocessing.Process` we own, talking over its own `Pipe`.  The parent hands a
worker a small chunk of items; the worker answers item by item, so the parent always knows which item
is running and since when.  When an item exceeds `timeout_s`, the parent SIGKILLs that worker, records
`error="timeout"` for the item, starts a fresh worker and re-queues the rest of the chunk.  No signals
are used in the parent, so this works from any thread.  Workers are forked (cheap, and they run only
this pure-Python module) where the platform allows; pairs whose answers are plain integers in a short
response are judged in the parent without starting any worker.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait

from masa.algo.verifier.extract import extract_answer
from masa.algo.verifier.judge import _INTEGER, Verdict, verify

FAST_PATH_MAX_CHARS = 20_000  # extraction is linear; beyond this it goes to a worker with a limit
MAX_CHUNK = 32


def _worker_main(conn: Connection) -> None:
    """Worker loop: receive [(index, response, answer), ...], send (index, correct, extracted, error)."""
    while True:
        try:
            chunk = conn.recv()
        except EOFError:
            return
        if chunk is None:
            return
        for idx, response, answer in chunk:
            try:
                v = verify(response, answer)
                conn.send((idx, v.correct, v.extracted, v.error))
            except Exception as e:  # noqa: BLE001 - one bad item must not take down the batch
                conn.send((idx, False, None, f"internal error: {type(e).__name__}: {e}"))


def _fast_verdict(response: str, answer: str) -> Verdict | None:
    """The verdict for a short response with a plain-integer answer, or None (needs a worker)."""
    if len(response) > FAST_PATH_MAX_CHARS or not _INTEGER.fullmatch(answer):
        return None
    extracted = extract_answer(response)
    if extracted is None:
        return Verdict(False, None, None)
    if _INTEGER.fullmatch(extracted):
        return Verdict(int(extracted) == int(answer), extracted, None)
    return None


class _Worker:
    def __init__(self, ctx: mp.context.BaseContext) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.proc.start()
        child.close()
        self.pending: deque[tuple[int, str, str]] = deque()
        self.since = 0.0  # when the item at pending[0] started

    def give(self, chunk: list[tuple[int, str, str]]) -> None:
        self.pending.extend(chunk)
        self.since = time.monotonic()
        self.conn.send(chunk)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(timeout=1.0)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _context(start_method: str | None) -> mp.context.BaseContext:
    if start_method is None:
        start_method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    return mp.get_context(start_method)


def verify_batch(
    pairs: Sequence[tuple[str, str]],
    *,
    timeout_s: float = 5.0,
    workers: int | None = None,
    start_method: str | None = None,
) -> list[Verdict]:
    """Judge `(response, answer)` pairs, each within `timeout_s` seconds, in worker processes.

    workers=None uses os.cpu_count() processes; workers=0 judges in this process without any limit
    (for tiny trusted batches and tests).  Output order matches `pairs`.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 or None, got {workers}")
    for k, pair in enumerate(pairs):
        if not (isinstance(pair, tuple | list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise TypeError(f"pairs[{k}] must be a (response: str, answer: str) pair, got {pair!r:.80}")
    if workers == 0:
        return [verify(r, a) for r, a in pairs]
    out: list[Verdict | None] = [None] * len(pairs)
    todo: deque[tuple[int, str, str]] = deque()
    for i, (response, answer) in enumerate(pairs):
        fast = _fast_verdict(response, answer)
        if fast is None:
            todo.append((i, response, answer))
        else:
            out[i] = fast
    if todo:
        n_workers = min(workers or os.cpu_count() or 1, len(todo))
        _run_pool(todo, out, n_workers, timeout_s, _context(start_method))
    return out  # type: ignore[return-value]


def _run_pool(
    todo: deque[tuple[int, str, str]],
    out: list[Verdict | None],
    n_workers: int,
    timeout_s: float,
    ctx: mp.context.BaseContext,
) -> None:
    chunk = max(1, min(MAX_CHUNK, len(todo) // (4 * n_workers)))
    pool = [_Worker(ctx) for _ in range(n_workers)]
    try:
        for w in pool:
            _feed(w, todo, chunk)
        while any(w.pending for w in pool):
            busy = [w for w in pool if w.pending]
            deadline = min(w.since for w in busy) + timeout_s
            ready = wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for k, w in enumerate(pool):
                if w.conn in ready and not _collect(w, out):
                    pool[k] = _replace(w, todo, ctx)
                elif w.pending and time.monotonic() - w.since > timeout_s:
                    out[w.pending.popleft()[0]] = Verdict(False, None, "timeout")
                    pool[k] = _replace(w, todo, ctx)
                if not pool[k].pending:
                    _feed(pool[k], todo, chunk)
    finally:
        for w in pool:
            w.stop()


def _feed(w: _Worker, todo: deque, chunk: int) -> None:
    items = [todo.popleft() for _ in range(min(chunk, len(todo)))]
    if items:
        w.give(items)


def _collect(w: _Worker, out: list[Verdict | None]) -> bool:
    """Store every verdict the worker has ready; False when the worker died (its item gets an error)."""
    while w.pending and w.conn.poll():
        try:
            idx, correct, extracted, error = w.conn.recv()
        except (EOFError, OSError):
            out[w.pending.popleft()[0]] = Verdict(False, None, "worker died")
            return False
        if idx != w.pending[0][0]:
            raise RuntimeError(f"verifier worker answered item {idx}, expected {w.pending[0][0]}")
        w.pending.popleft()
        out[idx] = Verdict(correct, extracted, error)
        w.since = time.monotonic()
    return True


def _replace(w: _Worker, todo: deque, ctx: mp.context.BaseContext) -> _Worker:
    """Kill `w`, put its unstarted items back at the front of the queue, and start a fresh worker."""
    todo.extendleft(reversed(w.pending))
    w.kill()
    return _Worker(ctx)
