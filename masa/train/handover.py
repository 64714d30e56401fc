"""The model's hand-over from a serving TrainJob (masa.train.listen) to the steps that read it next,
without waiting for the store: rank 0 names the round's model by the digest of the manifest it will
commit (`masa.storage.local_manifest`, the same digest `checkpoint.identity` reads back from the store),
keeps the directory, and uploads it in the background; the next rollout, score and train steps of the
branch take it from rank 0 (`fetch`, below) while the store's copy is incomplete, and from the store
once it is complete (masa.runner.layout: `local_model`, `policy_tokenizer`).

Why: at 8B the model is 16.4 GB; uploading it before the train step ends and downloading it in the
next rollout pod costs ~220 s a round at the S3 rates measured here (bench/paper_cost_model.py).

Wire (multiprocessing.connection, after the key's handshake), on each of `STREAMS` connections side by
side: ("fetch", {"identity", "light", "part", "parts"}) -> ("ok", manifest JSON) | ("error", text), then
per file of that part (`plan`: the files dealt out by size) ("file", relative path, size) and its raw
bytes on the socket, then ("done", None, 0). Why several: one stream is bound by one core's sha256 and
copies (~400 MB/s here, bench/bench_handover.py), a node's network is not; each stream hashes on its own
core as its bytes arrive, so a model of several shards (checkpoint.SHARD_SIZE) arrives at up to
`STREAMS` times one stream's rate. The receiver checks the manifest's
digest against the identity it asked for and every file's size and sha256 against the manifest, as
a download from the store is checked, so a hand-over can never give other bytes than the upload.
Used on one node only (the model is written there); a TrainJob of several nodes publishes before the
step ends, as before.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from masa.storage import MANIFEST, CheckpointError, Manifest

CHUNK = 8 << 20  # the receiver's buffer: hashed and written as it fills
# connections of a whole-model hand-over: the paper preset's model is ~9 shards of 2 GB, and the pods
# that receive it request 8 or more cores (resources.cpu_request)
STREAMS = 8
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")  # a checkpoint's weight files


def is_light(rel: str) -> bool:
    """A checkpoint's top-level non-weight file (config, tokenizer, chat template, markers): what
    scoring and a round that holds the weights need."""
    return "/" not in rel and not rel.endswith(WEIGHT_SUFFIXES)


def digest(manifest: Manifest) -> str:
    return hashlib.sha256(manifest.to_json()).hexdigest()


def plan(manifest: Manifest, light: bool, parts: int) -> list[list[str]]:
    """The files each of `parts` streams carries (both sides compute it from the manifest): the largest
    first, each to the stream with the fewest bytes so far, so the streams end together."""
    rels = sorted((r for r in manifest.files if not light or is_light(r)), key=lambda r: (-manifest.files[r].size, r))
    loads = [0] * parts
    out: list[list[str]] = [[] for _ in range(parts)]
    for rel in rels:
        i = loads.index(min(loads))
        loads[i] += manifest.files[rel].size
        out[i].append(rel)
    return [sorted(x) for x in out]


def send_files(conn, root: Path, manifest: Manifest, light: bool, part: int = 0, parts: int = 1) -> None:
    """Rank 0's side of one stream of a fetch whose identity it holds (the manifest's digest was checked
    by the caller). Each file's bytes go straight from the page cache to the socket (`os.sendfile`),
    after a message with its size: 3.5x the rate of `send_bytes` chunks here (bench/bench_handover.py)."""
    conn.send(("ok", manifest.to_json().decode()))
    for rel in plan(manifest, light, parts)[part]:
        size = (root / rel).stat().st_size
        conn.send(("file", rel, size))
        with open(root / rel, "rb") as f:
            sent = 0
            while sent < size:
                n = os.sendfile(conn.fileno(), f.fileno(), sent, size - sent)
                if n == 0:
                    raise OSError(f"{rel} shrank while it was sent")
                sent += n
    conn.send(("done", None, 0))


def _receive_part(connect: Callable, identity: str, dest: Path, light: bool, part: int, parts: int) -> Manifest:
    """One stream: its files written under `dest`, each checked against the manifest as it arrives."""
    with connect() as conn:
        conn.send(("fetch", {"identity": identity, "light": light, "part": part, "parts": parts}))
        status, value = conn.recv()
        if status != "ok":
            raise RuntimeError(f"the serving TrainJob cannot hand over {identity[:16]}: {value}")
        manifest = Manifest.from_json(value.encode(), where=f"trainer hand-over {identity[:16]}")
        if digest(manifest) != identity:
            raise CheckpointError(f"trainer hand-over: manifest digest {digest(manifest)[:16]} is not {identity[:16]}")
        expected = set(plan(manifest, light, parts)[part])
        # the file bytes come raw on the connection's socket (multiprocessing's Connection reads no
        # further than each message, so the two interleave)
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            buf = memoryview(bytearray(CHUNK))
            while True:
                status, rel, size = conn.recv()
                if status == "done":
                    break
                entry = manifest.files.get(rel)
                if rel not in expected or size != entry.size:
                    raise CheckpointError(f"trainer hand-over sent {rel!r} ({size} bytes), which the manifest does not list so")
                expected.discard(rel)
                h, got = hashlib.sha256(), 0
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                with open(dest / rel, "wb") as f:
                    while got < size:
                        n = sock.recv_into(buf[:min(CHUNK, size - got)])
                        if n == 0:
                            raise EOFError(f"the trainer closed the connection in {rel}")
                        h.update(buf[:n])
                        f.write(buf[:n])
                        got += n
                if h.hexdigest() != entry.sha256:
                    raise CheckpointError(f"trainer hand-over: {rel} does not match its manifest's sha256")
        if expected:
            raise CheckpointError(f"trainer hand-over ended without {sorted(expected)[0]!r}")
    return manifest


def receive_files(connect: Callable, identity: str, dest: Path, light: bool, streams: int = STREAMS) -> Path:
    """The client's side: ask for `identity` on `streams` connections side by side (`connect()` opens
    one; a light fetch, config and tokenizer only, uses one), write its files (all, or the light ones)
    under `dest`, each checked against the manifest, and the manifest itself. Raises CheckpointError
    naming what does not match, RuntimeError when rank 0 does not hold `identity`."""
    parts = 1 if light else streams
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(parts) as pool:
        futures = [pool.submit(_receive_part, connect, identity, dest, light, i, parts) for i in range(parts)]
        manifest = [f.result() for f in futures][0]  # the first stream's error, if any
    if not light:  # a whole checkpoint, as a verified download from the store leaves it
        (dest / MANIFEST).write_bytes(manifest.to_json())
    return dest
