"""GPU check of the transformers engine and the rollout step on it (machines with CUDA, no vLLM needed).

    python bench/check_engines_gpu.py

Checks on the GPU what the CPU tests check on CPU: log-probs against one forward pass (float32), seeded
reproducibility, batch independence, budget cutoff, bfloat16 sampling; then the masa-efficient rollout
step's gating/cutoff against the pure decision; then prints transformers-engine throughput. Exits
non-zero on the first failed check.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def ids(tok, text):
    return tuple(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False))


def mad(model, samples):
    diffs = []
    for s in samples:
        x = torch.tensor([list(s.prompt_token_ids) + list(s.response_token_ids)], device=model.device)
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=x).logits[0].float(), -1)
        p = len(s.prompt_token_ids)
        ref = lp[p - 1: -1].gather(-1, torch.tensor(s.response_token_ids, device=model.device)[:, None]).squeeze(-1)
        diffs.append((torch.tensor(s.logprobs, device=model.device) - ref).abs())
    return torch.cat(diffs).mean().item()


def main() -> int:
    from tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM

    from masa.engines import EngineConfig, GenerationRequest, SamplingSpec, make_engine

    assert torch.cuda.is_available(), "no CUDA device"
    print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
    tmp = Path(tempfile.mkdtemp())
    d = build_tiny_model(tmp / "tiny")
    eng = make_engine(EngineConfig(model=str(d), backend="transformers", dtype="float32"))
    assert eng.device.type == "cuda", eng.device
    ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).to("cuda").eval()
    tok = eng.tokenizer
    a = GenerationRequest(ids(tok, "What is 2 + 3?"), SamplingSpec(n=4, max_tokens=32, seed=3))
    b = GenerationRequest(ids(tok, "Solve for x: 3x + 1 = 10, step by step."),
                          SamplingSpec(n=3, max_tokens=32, budget=6, seed=9, temperature=0.7, top_k=20))
    out = eng.generate([a, b])
    m = mad(ref, out[0] + out[1])
    print(f"float32 log-prob MAD vs forward: {m:.2e}")
    assert m <= 1e-4, m
    assert [s.response_token_ids for s in eng.generate([a, b])[0]] == [s.response_token_ids for s in out[0]]
    assert [s.response_token_ids for s in eng.generate([b])[0]] == [s.response_token_ids for s in out[1]]
    assert all(len(s.response_token_ids) <= 6 for s in out[1])
    assert any(s.finish_reason == "cutoff" for s in out[1]), [s.finish_reason for s in out[1]]
    eng.close()
    bf = make_engine(EngineConfig(model=str(d), backend="transformers"))  # auto -> bfloat16 on GPU
    bout = bf.generate([a])[0]
    print(f"bfloat16 engine: dtype {next(bf._model.parameters()).dtype}, log-prob MAD vs float32 forward "
          f"{mad(ref, bout):.2e} (bf16 rounding, informational)")
    bf.close()
    check_rollout(d, tmp)
    throughput(tmp)
    print("ALL GPU CHECKS PASSED")
    return 0


def check_rollout(d: Path, tmp: Path) -> None:
    from tiny_model import overfit_tiny_model

    from masa.algo.config import AlgorithmConfig, CutoffConfig, GatingConfig
    from masa.algo.meta import render_meta_prompt
    from masa.data.records import Problem
    from masa.engines import EngineConfig, make_engine
    from masa.runner.rollout import SamplingSettings, decide, parse_group, rollout

    taught = {"What is 1 + 1?": 5, "Compute 3 * 7.": 30, "Solve x + 2 = 5.": 5, "Is 9 a prime?": 30}
    pairs = [(render_meta_prompt(q, n_solution=4, max_response_tokens=32),
              json.dumps({"math_notion": ["arithmetic"], "pass_rate": k, "solution_length": n}))
             for q, n in taught.items() for k in (0, 2, 4)]
    meta_dir = overfit_tiny_model(d, tmp / "meta", pairs, steps=150, target_loss=0.048)
    eng = make_engine(EngineConfig(model=str(meta_dir), backend="transformers", dtype="float32"))
    algo = AlgorithmConfig(name="masa-efficient", n_solution=4, n_meta=4,
                           gating=GatingConfig(min_rounds=1, window=1, explore_share=0.0),
                           cutoff=CutoffConfig(min_tokens=4))
    probs = [Problem(f"p{i}", q, "1") for i, q in enumerate(list(taught) * 2)]
    res = rollout(probs, eng, algorithm=algo, settings=SamplingSettings(max_response_tokens=32,
                  max_prompt_tokens=256), round_index=2, seed=5, mae_history=[0.1])
    meta = [[None] * 4 for _ in probs]
    for r in res.rows:
        if r["path"] == "meta":
            meta[r["group_id"]][r["sample_idx"]] = r
    # Recompute the decision from the shard's meta texts with the pure functions.
    from masa.engines.base import Sample

    groups = [[Sample(r["text"], (), (), (), "stop") for r in g] for g in meta]
    skip, budget, active = decide([parse_group(g, n_solution=4, max_response_tokens=32) for g in groups], algo,
                                  max_response_tokens=32, mae_history=[0.1], seed=5, round_index=2)
    assert active and res.skip == skip and res.budgets == budget, (res.skip, skip, res.budgets, budget)
    print(f"masa-efficient on GPU: stats {res.stats.gated_prompts} gated of {len(probs)}, "
          f"{res.stats.cutoff_samples} cutoff samples, {res.stats.meta_parse_failures} meta parse failures")
    assert 0 < sum(skip) < len(skip) and res.stats.cutoff_samples > 0
    eng.close()


def throughput(tmp: Path) -> None:
    from tiny_model import build_tiny_model

    from masa.algo.config import AlgorithmConfig
    from masa.data.records import Problem
    from masa.engines import EngineConfig, make_engine
    from masa.runner.rollout import SamplingSettings, rollout

    probs = [Problem(f"s{i}", f"What is {i} + {2 * i}? Think step by step.", str(3 * i)) for i in range(16)]
    for hidden, layers in ((64, 2), (256, 4)):
        d = build_tiny_model(tmp / f"h{hidden}", hidden=hidden, layers=layers)
        t0 = time.perf_counter()
        eng = make_engine(EngineConfig(model=str(d), backend="transformers"))
        start = time.perf_counter() - t0
        algo = AlgorithmConfig(name="grpo", n_solution=8)
        s = SamplingSettings(max_response_tokens=64, max_prompt_tokens=256)
        rollout(probs, eng, algorithm=algo, settings=s)  # warm-up
        r = rollout(probs, eng, algorithm=algo, settings=s, seed=1)
        print(f"transformers on GPU, qwen2 h{hidden} x{layers}: start-up {start:.2f} s, {r.stats.samples} samples, "
              f"{r.stats.tokens} tokens in {r.stats.wall_s:.2f} s = {r.stats.tokens_per_s:.0f} tokens/s")
        eng.close()


if __name__ == "__main__":
    sys.exit(main())
