"""Artifact store costs, side by side in one run: SeaweedFS start-up, what integrity (sha256 +
manifest) adds over raw transfers, multipart vs single PUT, and resolve_model cold vs cached.

    .venv/bin/python bench/bench_storage.py                 # 64 MiB checkpoint, 3 reps
    .venv/bin/python bench/bench_storage.py --mib 256 --reps 5

Loopback S3 on a shared 2-core box: absolute MB/s say little; the ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test helpers are top-level modules

from s3server import seaweedfs  # noqa: E402

from masa.storage import get_dir_verified, open_store, put_dir_atomic, resolve_model  # noqa: E402

MIB = 1 << 20


def timed(fn, reps: int) -> float:
    """Median wall seconds of `fn()` over `reps` runs."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_ckpt(root: Path, mib: int) -> list[str]:
    """A checkpoint-like dir: one big weights file (3/4), one optimizer shard (1/4), a config."""
    root.mkdir(parents=True)
    sizes = {"model.safetensors": mib * 3 // 4, "optim/rank0.pt": mib - mib * 3 // 4}
    for rel, n in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with open(root / rel, "wb") as f:
            for _ in range(n):
                f.write(os.urandom(MIB))
    (root / "config.json").write_text('{"model_type": "qwen2"}')
    return ["model.safetensors", "optim/rank0.pt", "config.json"]


def raw_copier(store):
    """(upload, download) without masa's integrity layer: plain boto3 transfers / file copies."""
    if hasattr(store, "client"):  # S3Store: same client and TransferConfig, no sha256, no HEAD
        def up(local, key):
            store.client.upload_file(local, store.bucket, store.prefix + key, Config=store.transfer)

        def down(key, local):
            Path(local).parent.mkdir(parents=True, exist_ok=True)
            store.client.download_file(store.bucket, store.prefix + key, local, Config=store.transfer)
        return up, down

    def up_local(local, key):
        (store.root / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, store.root / key)

    def down_local(key, local):
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.root / key, local)
    return up_local, down_local


def bench_store(name: str, uri: str, src: Path, rels: list[str], work: Path, reps: int, **opts) -> dict:
    store = open_store(uri, **opts)
    up, down = raw_copier(store)
    raw_up = timed(lambda: [up(str(src / r), f"raw/{r}") for r in rels], reps)
    atomic_up = timed(lambda: put_dir_atomic(store, str(src), "ckpt/step-1"), reps)

    def raw_down():
        shutil.rmtree(work / "raw", ignore_errors=True)
        for r in rels:
            down(f"raw/{r}", str(work / "raw" / r))

    def verified_down():
        shutil.rmtree(work / "ver", ignore_errors=True)
        get_dir_verified(store, "ckpt/step-1", str(work / "ver"))

    return {"name": name, "raw_up": raw_up, "atomic_up": atomic_up,
            "raw_down": timed(raw_down, reps), "verified_down": timed(verified_down, reps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=64, help="checkpoint size in MiB")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="masa-bench-storage-"))
    try:
        src = work / "src"
        rels = make_ckpt(src, args.mib)
        with seaweedfs(work / "s3") as s3:
            cold_start = s3.startup_s
            s3.stop()
            s3.start()
            restart = s3.startup_s
            os.environ.update(s3.env())
            s3.make_bucket("bench")
            rows = [
                bench_store("local dir", str(work / "store"), src, rels, work, args.reps),
                bench_store("s3 multipart 8 MiB x4", "s3://bench/mp", src, rels, work, args.reps,
                            multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB, max_concurrency=4),
                bench_store("s3 single PUT", "s3://bench/single", src, rels, work, args.reps,
                            multipart_threshold=1 << 40),
            ]
            put_dir_atomic(open_store("s3://bench/model"), str(src), "")
            cache = work / "cache"
            cold = timed(lambda: (shutil.rmtree(cache, ignore_errors=True),
                                  resolve_model("s3://bench/model", cache_dir=str(cache))), args.reps)
            warm = timed(lambda: resolve_model("s3://bench/model", cache_dir=str(cache)), args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = args.mib * MIB / 1e6
    print(f"SeaweedFS S3 ready: cold start {cold_start:.2f} s, restart on same data {restart:.2f} s")
    print(f"\ncheckpoint {args.mib} MiB (3 files), median of {args.reps}; raw = plain copy / boto3 transfer; masa = +sha256, size checks, fsync, manifest")
    print(f"{'store':<24}{'raw up MB/s':>12}{'masa up':>9}{'time x':>8}{'raw down':>10}{'masa down':>11}{'time x':>8}")
    for r in rows:
        print(f"{r['name']:<24}{mb / r['raw_up']:>12.0f}{mb / r['atomic_up']:>9.0f}"
              f"{r['atomic_up'] / r['raw_up']:>8.2f}{mb / r['raw_down']:>10.0f}{mb / r['verified_down']:>11.0f}"
              f"{r['verified_down'] / r['raw_down']:>8.2f}")
    mp, single = rows[1], rows[2]
    print(f"\nmultipart vs single PUT upload time: {mp['raw_up'] / single['raw_up']:.2f}x "
          f"(download {mp['raw_down'] / single['raw_down']:.2f}x)")
    print(f"resolve_model s3://: cold {cold:.3f} s, cached {warm:.3f} s -> {cold / warm:.0f}x faster when cached")


if __name__ == "__main__":
    main()
