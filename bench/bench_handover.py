"""What the serving TrainJob's work costs per byte (masa.train.handover, masa.train.listen), measured
here: the manifest's sha256 that names the model before its upload (`masa.storage.local_manifest`, one
file on one core, and 4 shards on 2 workers); the hand-over itself over TCP loopback (rank 0's
`send_files` to a step's `receive_files`, which writes and checks every file's sha256) on one stream and
on 2 side by side (4 shards), with the CPU time of both sides per byte; side by side with a verified download from a local-dir store of the same
bytes (`get_dir_verified`, the floor of any store download on this box); and one process's `torch.save`
of fp32 tensors (what each rank's ZeRO partition is) into the memory-backed /dev/shm, where the job
works, side by side with the same into /tmp and fsync'd. bench/paper_cost_model.py reads the rates
from bench/results/handover_cpu.json.

    .venv/bin/python bench/bench_handover.py [--mib 512] [--reps 3] [--out bench/results/handover_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Client, Listener
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masa.storage import get_dir_verified, local_manifest, open_store, put_dir_atomic  # noqa: E402
from masa.train.handover import digest, receive_files, send_files  # noqa: E402


def _serve(listener: Listener, root: Path, manifest, streams: int) -> None:
    """Rank 0's side of one hand-over: each stream's connection answered in its own thread."""
    def one(conn) -> None:
        with conn:
            _, arg = conn.recv()  # the fetch request
            send_files(conn, root, manifest, False, arg["part"], arg["parts"])

    threads = [threading.Thread(target=one, args=(listener.accept(),)) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def handover(src: Path, dest: Path, manifest, streams: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of both sides together) of one hand-over of `src` on `streams` streams."""
    key = os.urandom(16)
    with Listener(("127.0.0.1", 0), backlog=16, authkey=key) as listener:
        server = threading.Thread(target=_serve, args=(listener, src, manifest, streams))
        server.start()
        t, cpu = time.perf_counter(), time.process_time()
        receive_files(lambda: Client(listener.address, authkey=key), digest(manifest), dest, light=False,
                      streams=streams)
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        server.join()
    return wall, cpu


def save_rates(size: int, reps: int) -> dict[str, list[float]]:
    """MB/s of one process saving `size` bytes of fp32 tensors, into /dev/shm and into /tmp (fsync'd)."""
    import torch

    tensors = {f"p{i}": torch.randn(size // 8 // 4) for i in range(8)}
    rows: dict[str, list[float]] = {"torch_save_shm": [], "torch_save_disk": []}
    for _ in range(reps):
        for key, folder in (("torch_save_shm", "/dev/shm"), ("torch_save_disk", tempfile.gettempdir())):
            path = Path(folder) / f"masa-bench-save-{os.getpid()}.pt"
            t = time.perf_counter()
            torch.save(tensors, path)
            if key == "torch_save_disk":
                with open(path, "rb") as f:
                    os.fsync(f.fileno())
            rows[key].append(size / (time.perf_counter() - t) / 1e6)
            path.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "handover_cpu.json"))
    args = ap.parse_args()
    size = args.mib << 20
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model"  # one weights file (a small model's checkpoint)
        src.mkdir()
        (src / "model.safetensors").write_bytes(os.urandom(size))
        (src / "config.json").write_text("{}")
        shards = Path(tmp) / "shards"  # the same bytes in 4 shards (checkpoint.SHARD_SIZE at 8B gives ~9)
        shards.mkdir()
        for i in range(4):
            (shards / f"model-{i:05d}-of-00004.safetensors").write_bytes(os.urandom(size // 4))
        (shards / "config.json").write_text("{}")
        store = open_store(str(Path(tmp) / "store"))
        put_dir_atomic(store, str(src), "ckpt")
        names = ("sha256_manifest", "sha256_manifest_4_shards_2_workers", "handover_loopback",
                 "handover_loopback_2_streams", "handover_cpu_both_sides", "store_download_local")
        rows: dict[str, list[float]] = {k: [] for k in names}
        for r in range(args.reps):
            t = time.perf_counter()
            manifest = local_manifest(src, workers=1)
            rows["sha256_manifest"].append(size / (time.perf_counter() - t) / 1e6)
            t = time.perf_counter()
            sharded = local_manifest(shards, workers=2)
            rows["sha256_manifest_4_shards_2_workers"].append(size / (time.perf_counter() - t) / 1e6)

            wall, cpu = handover(src, Path(tmp) / f"got-{r}", manifest, 1)
            rows["handover_loopback"].append(size / wall / 1e6)
            rows["handover_cpu_both_sides"].append(size / cpu / 1e6)
            wall, _ = handover(shards, Path(tmp) / f"got2-{r}", sharded, 2)
            rows["handover_loopback_2_streams"].append(size / wall / 1e6)

            t = time.perf_counter()
            get_dir_verified(store, "ckpt", str(Path(tmp) / f"dl-{r}"))
            rows["store_download_local"].append(size / (time.perf_counter() - t) / 1e6)
    rows |= save_rates(size, args.reps)
    out = {k: {"MBps_median": statistics.median(v), "MBps": v} for k, v in rows.items()}
    ratio = out["handover_loopback"]["MBps_median"] / out["store_download_local"]["MBps_median"]
    for k, v in out.items():
        print(f"{k:<24}{v['MBps_median']:>9.0f} MB/s  (reps {', '.join(f'{x:.0f}' for x in v['MBps'])})")
    print(f"hand-over / local-store download: {ratio:.2f}x")
    streams = out["handover_loopback_2_streams"]["MBps_median"] / out["handover_loopback"]["MBps_median"]
    hashing = out["sha256_manifest_4_shards_2_workers"]["MBps_median"] / out["sha256_manifest"]["MBps_median"]
    print(f"2 streams / 1 stream: {streams:.2f}x; 2 hashing workers / 1: {hashing:.2f}x "
          f"({os.cpu_count()} cores shared by both sides)")
    record = {**out, "handover_over_local_download": ratio, "two_streams_over_one": streams,
              "two_hash_workers_over_one": hashing, "mib": args.mib, "reps": args.reps,
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d"),
              "command": f".venv/bin/python bench/bench_handover.py --mib {args.mib} --reps {args.reps}"}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
