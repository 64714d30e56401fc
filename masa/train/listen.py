"""The ranks of a serving TrainJob: the cluster half of the trainer service (masa.train.service is the
`masa run` half). `torchrun -m masa.train.listen '<ListenSpec JSON>'` on every node of a TrainJob that
the first train task of a branch creates (masa.train.served); the job stays up across that branch's
rounds, through the training's bounded runs, and each round's train task, a thin CPU pod, sends it the
round's request.

Why: a round that restores the trainer from the store moves the ZeRO-3 state (12 bytes a parameter,
~98.6 GB for 8B) down and up again; that alone puts a paper-scale round's overhead near 80%
(bench/paper_cost_model.py). Here the ranks keep their DeepSpeed engine (weights, AdamW moments, LR
schedule) between rounds, as the local service does, and the state reaches the store only at a run's
last round, in the background (single node) or before the step ends (several nodes: the partitions are
on their nodes, and the upload is a collective). On one node the model too is uploaded in the
background while rank 0 hands it to the next steps (masa.train.handover). The ranks work in
`ListenSpec.work_dir`, memory-backed, so saving the state costs memory bandwidth, not disk.

Protocol (rank 0 listens on `port`; `multiprocessing.connection` with the key the creator put in the
store: only pods that can read the run's store can connect):
    ("held", None)       -> ("ok", identity of the checkpoint whose state the ranks hold, or None)
    ("train", TrainCall) -> ("line", metrics line)* then ("done", {"held": bool, "identity": digest,
                            "global_step": int}) | ("error", text)
    ("fetch", {...})     -> the model's hand-over (masa.train.handover)
    ("drain", None)      -> ("ok", [failed uploads])
    ("stop", None)       -> ("ok", [failed uploads]), then every rank exits 0 (the TrainJob completes)
The other ranks wait in a broadcast for what rank 0 received; while nothing comes rank 0 broadcasts a
heartbeat every `beat_s`, so no collective waits near its timeout, and after `idle_s` without a
request it broadcasts a stop: a run that failed between rounds does not hold GPUs. Any error in a round
ends every rank (rank 0 first sends it to the step): the TrainJob fails, and the step's retry creates a
fresh one, which starts from the store as a one-shot TrainJob does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import sys
import threading
import time
import traceback
import uuid
from multiprocessing.connection import Listener
from multiprocessing.connection import wait as connection_wait
from pathlib import Path

import torch.distributed as dist

from masa.storage import Manifest, local_manifest
from masa.train import checkpoint as ckpt
from masa.train.checkpoint import BackgroundUploads
from masa.train.handover import digest, send_files
from masa.train.remote import publish_round, stage_on_nodes
from masa.train.served import read_key
from masa.train.spec import METRICS_PREFIX, ListenSpec, RoundRequest, TrainCall
from masa.train.worker import Held, init_distributed, train


class _Door:
    """Rank 0's side: accepts the steps' connections and answers what needs no other rank. Several
    connections stay open side by side (a step's own, and a hand-over's streams); a hand-over stream is
    sent from its own thread, and every one ends before a round or a stop changes what rank 0 holds."""

    def __init__(self, spec: ListenSpec, key: bytes) -> None:
        self.spec, self.conn, self.last = spec, None, time.monotonic()
        # a hand-over opens its streams at once: multiprocessing's default backlog of 1 makes the kernel drop
        # all but one, and the rest wait on TCP retransmits (seconds each)
        self.listener = Listener(("0.0.0.0", spec.port), backlog=64, authkey=key)
        self.waiting: queue.Queue = queue.Queue()
        self.open: list = []
        self.sending: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.waiting.put(self.listener.accept())
            except Exception:  # noqa: BLE001 - a client with the wrong key, or one that went away
                continue

    def _adopt(self, wait: float) -> None:
        """The connections that arrived (or came back from a hand-over stream); waits up to `wait` for
        one while none is open."""
        try:
            if not self.open:
                self.open.append(self.waiting.get(timeout=wait))
            while True:
                self.open.append(self.waiting.get_nowait())
        except queue.Empty:
            pass

    def _settle(self) -> None:
        """Let every hand-over stream end: a round replaces, and a stop removes, the model they read."""
        for t in self.sending:
            t.join()
        self.sending = []

    def next(self, kept: _Kept, uploads: BackgroundUploads) -> dict:
        """The next message for every rank: {"op": "train", ...}, {"op": "beat"} or {"op": "stop"}.
        What needs rank 0 alone (what the ranks hold, a hand-over, the uploads) is answered here."""
        beat_at = time.monotonic() + self.spec.beat_s
        while True:
            if time.monotonic() - self.last > self.spec.idle_s:
                print(f"masa: no request for {self.spec.idle_s:.0f} s: stopping", flush=True)
                self._settle()
                return {"op": "stop"}
            wait = beat_at - time.monotonic()
            if wait <= 0:
                return {"op": "beat"}
            self._adopt(wait)
            # a short wait: a connection that arrives meanwhile is adopted on the next pass
            for conn in connection_wait(self.open, timeout=min(wait, 0.2)) if self.open else []:
                self.conn = conn
                try:
                    op, arg = conn.recv()
                except (EOFError, OSError):
                    self.open.remove(conn)
                    continue
                self.last = time.monotonic()
                if op in ("train", "stop"):
                    self._settle()
                if op == "held":
                    self.send(("ok", kept.identity))
                elif op == "fetch":
                    self._fetch(kept, arg)
                elif op == "drain":
                    self.send(("ok", uploads.drain()))
                elif op == "stop":
                    self.send(("ok", uploads.drain()))
                    return {"op": "stop"}
                elif op == "train":  # rank 0 alone knows what the ranks hold: it decides for all
                    holds = arg["expects"] is not None and arg["expects"] == kept.identity
                    return {"op": "train", "call": arg, "holds": holds}
                else:
                    self.send(("error", f"unknown request {op!r}"))

    def _fetch(self, kept: _Kept, arg: dict) -> None:
        if kept.model is None or kept.identity != arg["identity"]:
            self.send(("error", f"holds {(kept.identity or 'nothing')[:16]}, not {arg['identity'][:16]}"))
            return
        conn, model, manifest = self.conn, kept.model, kept.manifest
        self.open.remove(conn)  # the stream's thread has it until the files are sent

        def stream() -> None:
            try:
                send_files(conn, model, manifest, arg["light"], arg.get("part", 0), arg.get("parts", 1))
                self.waiting.put(conn)  # the step may ask more on it
            except OSError:  # the step went away mid-transfer: it fails and its retry asks again
                conn.close()

        self.sending.append(threading.Thread(target=stream, daemon=True))
        self.sending[-1].start()

    def send(self, msg) -> None:
        """To the step, if it is still there: a step that went away (its pod stopped) does not stop the
        ranks; its retry finds them holding the round it sent."""
        if self.conn is None:
            return
        try:
            self.conn.send(msg)
        except OSError:
            self.conn = None


class _Tee:
    """Rank 0's stdout during a round: every line to the pod's log, metrics rows also to the step."""

    def __init__(self, out, door: _Door) -> None:
        self.out, self.door, self.buf = out, door, ""

    def write(self, s: str) -> int:
        self.out.write(s)
        self.buf += s
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            if line.startswith(METRICS_PREFIX):
                self.door.send(("line", line))
        return len(s)

    def flush(self) -> None:
        self.out.flush()


@dataclasses.dataclass
class _Kept:
    """What the ranks keep between rounds: the engine and the identity (manifest digest) of the
    checkpoint it matches; on rank 0 of a one-node job also that checkpoint's directory and manifest,
    which it hands over (masa.train.handover) and uploads in the background."""

    engine: Held | None = None
    identity: str | None = None
    model: Path | None = None
    manifest: Manifest | None = None


def _round(call: TrainCall, holds: bool, kept: _Kept, rank: int, world: int, uploads: BackgroundUploads | None) -> dict:
    """One round on this rank, from the held engine when `holds` (it is the round's start) and no resume
    point of the round wins; updates `kept`; returns the step's reply (rank 0)."""
    request = RoundRequest.from_dict(call.request)
    holds = holds and kept.engine is not None
    one_node = world == int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if rank == 0 and request.cfg.kl_coef > 0 and not request.cfg.ref_model:
        uploads.drain()  # the KL reference is the policy itself: every node reads it from the store
    light = kept.model if holds and one_node else None  # the round's start, as rank 0 holds it
    spec = stage_on_nodes(request, holds=holds, save_state=call.state != "keep", light_dir=light)
    use = holds and spec.resume_dir is None
    held, kept.engine, kept.identity = (kept.engine if use else None), None, None  # a new engine: the old one freed first
    spec = dataclasses.replace(spec, publish_to=None)  # published below, as `call.state` asks
    kept.engine = train(spec, rank=rank, world=world, held=held)
    work = Path(spec.work_dir)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # in the engine now; the scratch is memory-backed
        for staged in ("init_state", "resume_in", "inputs"):
            shutil.rmtree(work / staged, ignore_errors=True)
    info = ckpt.read_train_state(work / "state") if rank == 0 else None
    if not one_node:  # the partitions are on their nodes: publish before the step ends (collective)
        publish_round(work, request.out, kept=None if call.state == "publish" else "keep")
    elif rank == 0:
        _hand_over(work, request.out, call.state, kept, uploads)
    dist.barrier()
    if rank != 0:
        return {}
    kept.identity = call.hold_as or kept.identity or ckpt.identity(request.out)
    return {"held": use, "identity": kept.identity, "global_step": info["global_step"]}


def _hand_over(work: Path, out_uri: str, state: str, kept: _Kept, uploads: BackgroundUploads) -> None:
    """Rank 0 of a one-node job: name the round's model by its manifest's digest, keep it to hand over,
    and queue its upload (after the state's, when the state is published with it: a complete model
    then implies a complete state); a kept state is marked in the model, a background one queued after."""
    out = work / "out"
    metrics = work / "metrics.jsonl"
    if metrics.is_file():
        shutil.copy2(metrics, out / "metrics.jsonl")
    info = ckpt.read_train_state(work / "state")
    if state != "publish":
        (out / ckpt.STATE_FILE).write_text(json.dumps({**info, "state": state}, indent=1))
    manifest = local_manifest(out)
    identity = digest(manifest)
    model = work / f"held-{identity[:16]}"  # beside the round's scratch, which the next round clears
    shutil.rmtree(model, ignore_errors=True)
    shutil.move(str(out), model)
    state_uri = out_uri.rstrip("/") + "/" + ckpt.STATE_DIR
    if state == "publish":
        uploads.put(work / "state", state_uri, remove=False)
    uploads.put(model, out_uri, manifest, remove=False)
    if state == "background":
        pending = work / f"pending-{uuid.uuid4().hex}"
        shutil.move(str(work / "state"), pending)  # the next round writes a new work/state
        uploads.put(pending, state_uri)
    if state == "publish":
        uploads.drain()  # the next round overwrites work/state; the model's upload had to follow it anyway
    if kept.model is not None and kept.model != model:
        uploads.put(kept.model, None)  # the previous hand-over, once its upload is done
    kept.model, kept.manifest, kept.identity = model, manifest, identity


def listen(spec: ListenSpec) -> int:
    """Serve rounds until a stop (from a step, or after `spec.idle_s` without a request)."""
    rank, world = init_distributed()
    door = _Door(spec, read_key(spec.key_uri)) if rank == 0 else None
    uploads = BackgroundUploads() if rank == 0 else None
    kept = _Kept()
    if door:
        print(f"masa: trainer listening on port {spec.port} ({world} ranks)", flush=True)
    while True:
        box = [door.next(kept, uploads) if door else None]
        dist.broadcast_object_list(box, src=0)
        msg = box[0]
        if msg["op"] == "beat":
            continue
        if msg["op"] == "stop":
            break
        call = TrainCall.from_dict(msg["call"])
        stdout = sys.stdout
        try:
            if door:
                sys.stdout = _Tee(stdout, door)
            reply = _round(call, msg["holds"], kept, rank, world, uploads)
        except BaseException:
            if door:
                door.send(("error", traceback.format_exc()[-4000:]))
            raise
        finally:
            sys.stdout = stdout
        if door:
            door.send(("done", reply))
            door.last = time.monotonic()  # idle from the round's end, not from its request
    if uploads:
        for e in uploads.drain():
            print(f"masa: upload failed: {e}", flush=True)
    dist.barrier()
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # memory-backed: give it back
        shutil.rmtree(spec.work_dir, ignore_errors=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = listen(ListenSpec.from_dict(json.loads(sys.argv[1])))
    # Every round has replied, the uploads are drained and the process group is destroyed: exit without
    # the interpreter's teardown, whose C++ destructors can find a library thread still joinable and
    # abort ("terminate called without an active exception": rank 0 exited -6 after a finished stop, once,
    # in a CI run on a loaded 2-core machine, 2026-12-04), which a JobSet reports as a failed job.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
