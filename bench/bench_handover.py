"""What the serving TrainJob's work costs per byte (masa.train.handover, masa.train.listen), measured
here: the manifest's sha256 that names the model before its upload (`masa.storage.local_manifest`); the
hand-over itself over TCP loopback (rank 0's `send_files` to a step's `receive_files`, which writes and
checks every file's sha256), side by side with a verified download from a local-dir store of the same
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


def _serve_once(listener: Listener, root: Path, manifest) -> None:
    with listener.accept() as conn:
        conn.recv()  # the fetch request
        send_files(conn, root, manifest, light=False)


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
        src = Path(tmp) / "model"
        src.mkdir()
        (src / "model.safetensors").write_bytes(os.urandom(size))
        (src / "config.json").write_text("{}")
        store = open_store(str(Path(tmp) / "store"))
        put_dir_atomic(store, str(src), "ckpt")
        rows = {"sha256_manifest": [], "handover_loopback": [], "store_download_local": []}
        for r in range(args.reps):
            t = time.perf_counter()
            manifest = local_manifest(src)
            rows["sha256_manifest"].append(size / (time.perf_counter() - t) / 1e6)

            key = os.urandom(16)
            with Listener(("127.0.0.1", 0), authkey=key) as listener:
                server = threading.Thread(target=_serve_once, args=(listener, src, manifest))
                server.start()
                t = time.perf_counter()
                with Client(listener.address, authkey=key) as conn:
                    receive_files(conn, digest(manifest), Path(tmp) / f"got-{r}", light=False)
                rows["handover_loopback"].append(size / (time.perf_counter() - t) / 1e6)
                server.join()

            t = time.perf_counter()
            get_dir_verified(store, "ckpt", str(Path(tmp) / f"dl-{r}"))
            rows["store_download_local"].append(size / (time.perf_counter() - t) / 1e6)
    rows |= save_rates(size, args.reps)
    out = {k: {"MBps_median": statistics.median(v), "MBps": v} for k, v in rows.items()}
    ratio = out["handover_loopback"]["MBps_median"] / out["store_download_local"]["MBps_median"]
    for k, v in out.items():
        print(f"{k:<24}{v['MBps_median']:>9.0f} MB/s  (reps {', '.join(f'{x:.0f}' for x in v['MBps'])})")
    print(f"hand-over / local-store download: {ratio:.2f}x")
    record = {**out, "handover_over_local_download": ratio, "mib": args.mib, "reps": args.reps,
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "date": time.strftime("%Y-%m-%d"),
              "command": f".venv/bin/python bench/bench_handover.py --mib {args.mib} --reps {args.reps}"}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
