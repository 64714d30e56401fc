"""Generation speed of our vLLM engine against vLLM's CPU defaults, side by side on the toy model.

    .venv/bin/python bench/bench_rollout_speed.py [--prompts 500] [--n 8] [--reps 3] [--recipe toy]

Two engines on the same toy model, the same pre-tokenised held-out prompts, seeds and sampling
(T=1, logprobs of the sampled tokens, as a rollout asks): vLLM's CPU defaults (256 sequences per step,
each token detokenized as it is sampled) against `masa.engines.vllm_engine.VLLMEngine`
(`CPU_MAX_NUM_SEQS` per step, texts decoded once at the end). Runs alternate after a warm-up; medians
of `--reps` and their ratio are printed, and whether both produced the same token ids and texts.
The toy model comes from the cache (`masa toy build`; built now, ~4-8 min, if the cache is empty).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def requests_for(art, n_prompts: int, n: int, max_tokens: int):
    from transformers import AutoTokenizer

    from masa.data.records import load_problems
    from masa.engines.base import GenerationRequest, SamplingSpec

    tok = AutoTokenizer.from_pretrained(art.model_dir)
    probs = load_problems(str(art.heldout_parquet))[0][:n_prompts]
    out = []
    for i, p in enumerate(probs):
        text = tok.apply_chat_template([{"role": "user", "content": p.problem}], add_generation_prompt=True,
                                       tokenize=False)
        ids = tuple(tok.encode(text, add_special_tokens=False))
        out.append(GenerationRequest(ids, SamplingSpec(n=n, max_tokens=max_tokens, seed=1000 * i)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="toy")
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    import vllm

    from masa.engines.base import EngineConfig
    from masa.engines.vllm_engine import VLLMEngine, llm_kwargs
    from masa.toy import build, get_recipe

    art = build(get_recipe(a.recipe))
    reqs = requests_for(art, a.prompts, a.n, a.max_tokens)
    cfg = EngineConfig(model=str(art.model_dir), backend="vllm", max_model_len=512)
    ours = VLLMEngine(cfg)
    base_kwargs = {k: v for k, v in llm_kwargs(cfg, ours.model_dir).items() if k != "max_num_seqs"}
    base = vllm.LLM(**base_kwargs)

    def run_base():
        prompts = [{"prompt_token_ids": list(r.prompt_token_ids)} for r in reqs]
        params = [vllm.SamplingParams(n=r.sampling.n, temperature=1.0, max_tokens=r.sampling.max_tokens,
                                      seed=r.sampling.seed, logprobs=0) for r in reqs]
        outs = base.generate(prompts, params, use_tqdm=False)
        return [(tuple(c.token_ids), c.text) for o in outs for c in o.outputs]

    def run_ours():
        return [(s.response_token_ids, s.text) for ss in ours.generate(reqs) for s in ss]

    same = run_base() == run_ours()  # also the warm-up
    times: dict[str, list[float]] = {"vllm_cpu_defaults": [], "ours": []}
    for _ in range(a.reps):
        for name, fn in (("vllm_cpu_defaults", run_base), ("ours", run_ours)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"toy model {art.model_dir}, {a.prompts} prompts x {a.n}, <= {a.max_tokens} tokens, {os.cpu_count()} cpus")
    for k, v in times.items():
        print(f"  {k:<18} median {med[k]:6.1f} s  runs {' '.join(f'{x:.1f}' for x in v)}")
    print(f"  ours / defaults    {med['ours'] / med['vllm_cpu_defaults']:.2f}x time; same ids and texts: {same}")


if __name__ == "__main__":
    main()
