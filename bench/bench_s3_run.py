"""`masa run` end to end on a SeaweedFS store against the same run on a local directory store, side by
side (issue 18): wall time of each, the ratio, and `masa store verify --deep` of the S3 run.

    .venv/bin/python bench/bench_s3_run.py                              # smoke preset, 2 rounds
    .venv/bin/python bench/bench_s3_run.py --preset toy --set rounds=3  # the toy preset, 3 rounds
    .venv/bin/python bench/bench_s3_run.py --no-local                   # the S3 run only

Each run uses a fresh --out (kfp.local's cache empty) and a fresh store; the toy model build is
cached by recipe outside both, so the first run of a recipe pays its build (reported by prepare).
Loopback S3 on a shared 2-core box: the ratio is the point, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test helpers are top-level modules

from s3server import seaweedfs  # noqa: E402


def masa(args: list[str], env: dict[str, str]) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "masa.cli", *args], env=env, capture_output=True, text=True)
    return r.returncode, time.perf_counter() - t0, r.stdout + ("\n" + r.stderr if r.returncode else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="smoke")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--no-local", action="store_true", help="skip the local-store run")
    a = ap.parse_args()
    sets = [x for kv in a.overrides for x in ("--set", kv)]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="masa-bench-s3run-") as tmp, seaweedfs(Path(tmp) / "weed") as s3:
        env.update(s3.env(), MASA_MODEL_CACHE=str(Path(tmp) / "models"))
        s3.make_bucket("bench")
        rows = []
        stores = [("s3", "s3://bench/runs")] + ([] if a.no_local else [("local", str(Path(tmp) / "store"))])
        for name, store in stores:
            rc, secs, out = masa(["run", "--preset", a.preset, *sets, "--store", store, "--out",
                                  str(Path(tmp) / f"out-{name}")], env)
            if rc != 0:
                print(out[-4000:])
                print(f"{name}: masa run failed (rc {rc})")
                return 1
            rows.append((name, secs))
        rc, vsecs, vout = masa(["store", "verify", "s3://bench/runs", "--deep"], env)
    print(f"preset {a.preset} {' '.join(a.overrides)}")
    print(f"{'store':<6} {'masa run s':>10}")
    for name, secs in rows:
        print(f"{name:<6} {secs:>10.1f}")
    if len(rows) == 2:
        print(f"s3 / local: {rows[0][1] / rows[1][1]:.2f}x")
    print(f"masa store verify --deep (S3): rc {rc} in {vsecs:.1f} s: {vout.strip().splitlines()[-1]}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
