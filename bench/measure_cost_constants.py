"""Measures, on this machine, the constants of bench/paper_cost_model.py that can be measured
without a GPU; writes them to bench/results/cost_constants_cpu.json (the model reads that file).

    flock /tmp/masa-heavy.lock .venv/bin/python bench/measure_cost_constants.py          # ~2 min
    .venv/bin/python bench/measure_cost_constants.py --mib 64 --parts 8 32        # quicker

- S3 throughput of our store (`put_dir_atomic` / `get_dir_verified`: multipart, sha256, manifest) to a
  real SeaweedFS server on loopback, at several multipart part sizes. A 2-core box: CPU-bound (sha256,
  HTTP), so a floor for a cluster's S3, not its speed.
- Checkpoint bytes per parameter of our consolidated format (safetensors, bf16) from a saved model.
- vLLM engine start-up (CPU build, in-process engine, tiny model): the framework's fixed cost, a
  floor for a GPU engine (which adds weight loading, measured separately as S3 + bytes/param).
- DeepSpeed start-up: `deepspeed.initialize` with ZeRO-3 on one gloo rank, tiny model, imports included.
- Bytes per parameter of the resumable training state (ZeRO-3, bf16: what each round publishes
  beside its model so the next round continues AdamW).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MIB = 1 << 20
OUT = ROOT / "bench" / "results" / "cost_constants_cpu.json"


def s3_throughput(mib: int, parts: list[int], reps: int) -> dict:
    from s3server import seaweedfs

    from masa.storage import get_dir_verified, open_store, put_dir_atomic

    out = {}
    with tempfile.TemporaryDirectory(prefix="masa-cost-") as d, seaweedfs(Path(d) / "s3") as s3:
        os.environ.update(s3.env())
        s3.make_bucket("cost")
        src = Path(d) / "src"
        src.mkdir()
        with open(src / "model.safetensors", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MIB))
        for part in parts:
            store = open_store(f"s3://cost/p{part}", multipart_threshold=part * MIB,
                               multipart_chunksize=part * MIB, max_concurrency=4)
            up, down = [], []
            for i in range(reps):
                t0 = time.perf_counter()
                put_dir_atomic(store, str(src), f"c{i}")
                up.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                get_dir_verified(store, f"c{i}", str(Path(d) / f"down{part}-{i}"))
                down.append(time.perf_counter() - t0)
            out[f"{part}MiB"] = {"up_MBps": mib * MIB / 1e6 / statistics.median(up),
                                 "down_MBps": mib * MIB / 1e6 / statistics.median(down)}
    return out


def bytes_per_param(d: Path) -> float:
    import torch
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    src = build_tiny_model(d / "tiny", hidden=256, layers=4)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    model.save_pretrained(d / "bf16", safe_serialization=True)  # the format the trainer publishes
    n = sum(p.numel() for p in model.parameters())
    size = sum(f.stat().st_size for f in (d / "bf16").glob("*.safetensors"))
    return size / n


def vllm_startup(d: Path) -> float:
    code = ("import sys,time; sys.path.insert(0,'tests'); from tiny_model import build_tiny_model;"
            f"p=build_tiny_model('{d}/v'); from masa.engines import EngineConfig, make_engine;"
            "e=make_engine(EngineConfig(model=str(p), backend='vllm', max_model_len=512)); print(e.startup_s); e.close()")
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    return float(r.stdout.strip().splitlines()[-1])


def deepspeed_startup(d: Path) -> float:
    code = (
        "import time; t0=time.perf_counter(); import os, sys, torch, deepspeed; sys.path.insert(0,'tests');"
        "from tiny_model import build_tiny_model; from transformers import AutoModelForCausalLM;"
        f"m=AutoModelForCausalLM.from_pretrained(build_tiny_model('{d}/ds'));"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29591', RANK='0', LOCAL_RANK='0', WORLD_SIZE='1');"
        "deepspeed.init_distributed(dist_backend='gloo');"
        "cfg={'train_micro_batch_size_per_gpu':1,'zero_optimization':{'stage':3}};"
        "opt=torch.optim.AdamW(m.parameters(), lr=1e-5);"
        "deepspeed.initialize(model=m, optimizer=opt, config=cfg); print(time.perf_counter()-t0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    return float(r.stdout.strip().splitlines()[-1])


def train_state_bytes_per_param(d: Path) -> float:
    """Bytes per parameter of the resumable DeepSpeed state our train step publishes each round
    (`masa.train.checkpoint.save_state`: ZeRO-3 with bf16 as the `paper` preset trains: bf16
    weights, fp32 master weights and AdamW's two fp32 moments, partitioned), one gloo rank, tiny model."""
    code = (
        "import os, sys, json, torch, deepspeed; sys.path.insert(0,'tests'); from pathlib import Path;"
        "from tiny_model import build_tiny_model; from transformers import AutoModelForCausalLM;"
        "from masa.train.checkpoint import save_state;"
        f"m=AutoModelForCausalLM.from_pretrained(build_tiny_model('{d}/st', hidden=256, layers=4), dtype=torch.bfloat16);"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT='29592', RANK='0', LOCAL_RANK='0', WORLD_SIZE='1');"
        "deepspeed.ops.__compatible_ops__['deepspeed_shm_comm']=False;"
        "deepspeed.init_distributed(dist_backend='gloo');"
        "cfg={'train_micro_batch_size_per_gpu':1,'zero_optimization':{'stage':3},'bf16':{'enabled':True}};"
        "opt=torch.optim.AdamW(m.parameters(), lr=1e-5);"
        "e,_,_,_=deepspeed.initialize(model=m, optimizer=opt, config=cfg);"
        "n=sum(p.ds_numel for p in e.module.parameters());"
        # AdamW creates its moments at the first step: take one, as every round's state has
        "x=torch.tensor([[1,2,3,4]]); e.backward(e(input_ids=x, labels=x).loss); e.step();"
        f"save_state(e, Path('{d}/state'), {{}});"
        f"size=sum(f.stat().st_size for f in Path('{d}/state').rglob('*') if f.is_file());"
        "print(size/n)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256, help="object size for the S3 figures")
    ap.add_argument("--parts", type=int, nargs="+", default=[8, 32, 64], help="multipart part sizes, MiB")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="masa-cost-") as d:
        result = {
            "measured": str(date.today()), "machine": f"{os.cpu_count()} CPU cores, no GPU",
            "command": "flock /tmp/masa-heavy.lock .venv/bin/python bench/measure_cost_constants.py "
                       f"--mib {args.mib} --parts {' '.join(map(str, args.parts))} --reps {args.reps}",
            "s3_seaweedfs_loopback": s3_throughput(args.mib, args.parts, args.reps),
            "checkpoint_bytes_per_param_bf16": bytes_per_param(Path(d)),
            "vllm_startup_s_cpu_tiny": vllm_startup(Path(d)),
            "deepspeed_zero3_startup_s_cpu_tiny": deepspeed_startup(Path(d)),
            "train_state_bytes_per_param_zero3_bf16": train_state_bytes_per_param(Path(d)),
        }
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
