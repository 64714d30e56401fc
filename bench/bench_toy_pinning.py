"""Toy warm start under pinned math-library code paths, side by side: what cross-vendor equality would cost.

The same toy recipe builds different weights on Intel and AMD processors at one SIMD level
(docs/toy.md, "Reproducibility"): torch does its matrix products in MKL, which picks its code path
by processor, and its own kernels by `ATEN_CPU_CAPABILITY`. Both are read when the libraries load, so
each arm runs in a child process with its environment: `--steps` warm-start steps on the toy's
shapes (as `bench_toy_threads.py`, two threads, deterministic algorithms), then prints per arm the
seconds per step, the ratio to the unpinned arm, the capability torch reports and a hash of the
weights. The hashes are the point of comparison across machines: run the bench on another
processor and compare the `COMPATIBLE` arms (MKL documents that branch, alone, as giving the same
results on Intel and compatible processors; its `AVX2` branch falls back to automatic dispatch on
non-Intel ones).

    .venv/bin/python bench/bench_toy_pinning.py [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

# (label, ATEN_CPU_CAPABILITY, MKL_CBWR); None leaves the variable unset, "" sets it empty: MKL's CNR off
# (importing masa would otherwise set AUTO,STRICT, masa/__init__.py), the baseline the ratios are to.
ARMS = (
    ("unpinned (MKL CNR off)", None, ""),
    # strict CNR on the automatic branch, masa's default since 2026-12-05: results independent of memory
    # alignment, so a forked rank trains what a fresh interpreter does (docs/training.md, "Bit-equal
    # runs"); its cost is the question
    ("MKL AUTO,STRICT (default)", None, "AUTO,STRICT"),
    ("MKL AVX2", None, "AVX2"),
    ("ATen avx2 + MKL AVX2", "avx2", "AVX2"),
    ("ATen avx2 + MKL COMPATIBLE", "avx2", "COMPATIBLE"),
    ("ATen default + MKL COMPATIBLE", "default", "COMPATIBLE"),
)


def child(steps: int) -> None:
    import torch
    from bench_toy_threads import measure

    from masa.toy.task import generate_splits
    from masa.toy.tokenizer import train_tokenizer
    from masa.toy.warmstart import encode

    train, _ = generate_splits(512, 0, seed=0)
    tok = train_tokenizer([t for p in train for t in (p.question, p.solution)], vocab_size=512)
    examples = [encode(tok, p.question, p.solution) for p in train[:64]]
    (step_cpu, step_wall, _, _), weights = measure(2, steps, tok, examples, [train[0].question])
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "step_cpu": step_cpu,
                      "step_wall": step_wall, "weights": weights[:16]}))


def arm_env(base: dict[str, str], aten: str | None, cbwr: str | None) -> dict[str, str]:
    """The child's environment: `base` with both pins replaced; None removes a pin the caller had set
    and "" sets it empty, so the unpinned arm is unpinned even when the bench itself runs under a pin
    (and MKL's stays empty, off, when the child imports masa)."""
    env = {k: v for k, v in base.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env.update({k: v for k, v in (("ATEN_CPU_CAPABILITY", aten), ("MKL_CBWR", cbwr)) if v is not None})
    return env


def run_arm(steps: int, aten: str | None, cbwr: str | None) -> dict:
    env = arm_env(dict(os.environ), aten, cbwr)
    out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.steps)
        return
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{cpu}; cores visible {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; {args.steps} steps")
    print(f"{'arm':32} {'capability':>10} {'s/step':>7} {'ratio':>6}  weights")
    base = None
    for label, aten, cbwr in ARMS:
        r = run_arm(args.steps, aten, cbwr)
        base = base or r["step_wall"]
        print(f"{label:32} {r['capability']:>10} {r['step_wall']:7.3f} {r['step_wall'] / base:5.2f}x  {r['weights']}")


if __name__ == "__main__":
    main()
