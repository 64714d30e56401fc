"""Training tokens/s on 2 worker processes against 1, on the same round (same model, shard and config).

Both runs go through `masa.runner.training.train_round` (torchrun + DeepSpeed ZeRO-2, gloo on CPU). The
figure is the median over optimizer steps after the first (which pays for warm-up) of the step's
tokens (all ranks) / step wall time; process start and checkpoint writing are reported separately.

    .venv/bin/python bench/bench_train.py                 # CPU: small random Qwen2, 2 vs 1 processes
    .venv/bin/python bench/bench_train.py --hidden 256 --layers 4 --steps 6

On a machine with fewer free cores than 2 x OMP_NUM_THREADS the 2-process figure measures contention,
not scaling: the script prints the core count beside the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def build_model(out: Path, hidden: int, layers: int, vocab: int) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 32), num_key_value_heads=max(1, hidden // 64),
                      max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=0)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--budget", type=int, default=1024, help="max tokens per micro-batch per rank")
    ap.add_argument("--nprocs", default="1,2")
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP threads per process (default 1: on a shared machine more threads than free "
                         "cores make OpenMP spin, which swamps the comparison)")
    args = ap.parse_args()

    from masa.runner.training import train_round
    from masa.train.config import TrainConfig
    from masa.train.synthetic import write_synthetic_shards

    root = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = build_model(root / "model", args.hidden, args.layers, args.vocab)
    scored, experts = write_synthetic_shards(root / "data", vocab_size=args.vocab, n_prompts=args.prompts,
                                             n_solution=8, n_meta=8, prompt_len=(32, 96),
                                             response_len=(32, 256), n_experts=args.prompts)
    cfg = TrainConfig(lr=1e-5, warmup_steps=0, steps_per_round=args.steps,
                      max_tokens_per_microbatch=args.budget)
    results = {}
    for n in [int(x) for x in args.nprocs.split(",")]:
        t0 = time.perf_counter()
        r = train_round(str(model), str(scored), str(experts), str(root / f"out{n}"), cfg, nproc=n,
                        work_dir=str(root / f"work{n}"), env={"OMP_NUM_THREADS": str(args.threads)})
        wall = time.perf_counter() - t0
        tps = [s["tokens_per_s"] for s in r["steps"][1:]] or [r["steps"][0]["tokens_per_s"]]
        train_s = sum(s["seconds"] for s in r["steps"])
        results[n] = {"tokens_per_s": statistics.median(tps), "tokens_per_step": r["steps"][0]["tokens"],
                      "train_seconds": round(train_s, 2), "wall_seconds": round(wall, 2),
                      "overhead_seconds": round(wall - train_s, 2)}
    out = {"cpu_count": os.cpu_count(), "omp_threads_per_process": args.threads,
           "load_avg_1m": round(os.getloadavg()[0], 2), "model": {"hidden": args.hidden, "layers": args.layers,
                                                  "vocab": args.vocab}, "runs": results}
    ns = sorted(results)
    if len(ns) == 2:
        out[f"speedup_{ns[1]}_vs_{ns[0]}"] = round(results[ns[1]]["tokens_per_s"] / results[ns[0]]["tokens_per_s"], 3)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
