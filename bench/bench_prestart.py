"""A rollout step's engine start with and without the overlap `make_engine(config, fetch=...)` gives:
the step fetches its policy (here: a verified download of `--mib` MiB from a local-dir store, as a
store download or the serving TrainJob's hand-over writes and checks every byte) while its engine
imports vLLM, against fetching first and starting the engine after (as the rollout step did until
2026-12-04). Each trial is a fresh interpreter (vLLM is imported once per process), the two ways
alternate, and the medians are printed side by side with their ratio; the vLLM CPU engine on a tiny
model, so what overlaps is the framework's start, not a GPU's weight load. Also timed, in fresh
interpreters: the import alone (`masa.engines.backends.preload_backend`), the part of the start that
can overlap; bench/paper_cost_model.py reads it from bench/results/prestart_cpu.json.

    .venv/bin/python bench/bench_prestart.py [--mib 512] [--reps 3] [--replicas 2] [--out bench/results/prestart_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRIAL = """
import json, sys, time
from dataclasses import replace
from masa.engines import EngineConfig, make_engine
from masa.storage import get_dir_verified, open_store
store, model, dest, way, replicas = sys.argv[1:6]
fetched = {}

def fetch():
    t = time.perf_counter()
    get_dir_verified(open_store(store), "policy", dest)
    fetched["s"] = time.perf_counter() - t
    return model

config = EngineConfig(model="the policy", backend="vllm", max_model_len=512, replicas=int(replicas))
t = time.perf_counter()
if way == "sequential":
    engine = make_engine(replace(config, model=fetch()))
else:
    engine = make_engine(config, fetch=fetch)
wall = time.perf_counter() - t
engine.close()
print(json.dumps({"wall_s": wall, "fetch_s": fetched["s"]}))
"""


IMPORT = """
import json, time
from masa.engines import EngineConfig
from masa.engines.backends import preload_backend
t = time.perf_counter()
preload_backend(EngineConfig(model="m", backend="vllm"))
print(json.dumps({"import_s": time.perf_counter() - t}))
"""


def import_s() -> float:
    r = subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(r.stdout.strip().splitlines()[-1])["import_s"]


def trial(way: str, store: str, model: Path, work: Path, replicas: int) -> dict:
    dest = work / f"dest-{way}-{os.urandom(4).hex()}"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = subprocess.run([sys.executable, "-c", TRIAL, store, str(model), str(dest), way, str(replicas)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    shutil.rmtree(dest, ignore_errors=True)
    if r.returncode:
        sys.exit(f"bench_prestart: the {way} trial failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=512, help="size of the fetched policy")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2, help="engine replicas (processes) of the step; "
                    "1: one engine in the step's process, its import in a thread beside the fetch")
    ap.add_argument("--out", type=Path, default=None, help="also write the result there (JSON)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_model import build_tiny_model

    from masa.storage import open_store, put_dir_atomic

    with tempfile.TemporaryDirectory(prefix="masa-prestart-") as d:
        work = Path(d)
        model = build_tiny_model(work / "model")
        src = work / "policy"
        src.mkdir()
        for i in range(4):  # the policy's bytes, in shards as the trainer writes them
            (src / f"model-{i:05d}.safetensors").write_bytes(os.urandom(args.mib * (1 << 20) // 4))
        store = str(work / "store")
        put_dir_atomic(open_store(store), str(src), "policy")
        runs = {"sequential": [], "overlapped": []}
        imports = [import_s() for _ in range(args.reps)]
        for _ in range(args.reps):
            for way in runs:  # alternating, so a drift of the machine hits both alike
                runs[way].append(trial(way, store, model, work, args.replicas))
    med = {way: statistics.median(r["wall_s"] for r in rs) for way, rs in runs.items()}
    fetch_s = statistics.median(r["fetch_s"] for rs in runs.values() for r in rs)
    out = {"measured": date.today().isoformat(), "machine": f"{os.cpu_count()} cores, {platform.machine()}",
           "command": f".venv/bin/python bench/bench_prestart.py --mib {args.mib} --reps {args.reps} "
                      f"--replicas {args.replicas}",
           "import_s_median": statistics.median(imports), "fetch_s_median": fetch_s, "wall_s_median": med, "overlapped_over_sequential": med["overlapped"] / med["sequential"],
           "hidden_s": med["sequential"] - med["overlapped"], "runs": runs}
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
