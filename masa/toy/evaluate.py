"""Measure a toy build with the real vLLM CPU engine: the spread of sampled pass rates and meta parsing.

This is the check behind the toy's promise: sampled at temperature 1 with G samples per prompt, enough
prompts must have a pass rate strictly between 0 and 1 (GRPO's signal), and the meta samples must parse
(MASA's meta path has something to score) while not yet being calibrated (MASA must earn that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from masa.toy.build import ToyArtifacts


@dataclass(frozen=True)
class ToyEvalReport:
    split: str
    n_prompts: int
    n_samples: int
    pass_rate: float  # mean over prompts x samples
    mixed_fraction: float  # prompts with 0 < correct < n_samples
    all_wrong_fraction: float
    all_right_fraction: float
    meta_parse_rate: float
    meta_pass_rate_mae: float | None  # |predicted k/G - observed pass rate| over parsed meta samples
    mean_solution_tokens: float
    seconds: float
    correct_counts: tuple[int, ...] = field(repr=False, default=())


def load_problems(parquet, n: int) -> list[tuple[str, str]]:
    """(question, target) of the first `n` rows of a toy parquet."""
    import pyarrow.parquet as pq

    rows = pq.read_table(parquet, columns=["reward_model"]).slice(0, n).to_pylist()
    return [(r["reward_model"]["ground_truth"]["question"], r["reward_model"]["ground_truth"]["target"])
            for r in rows]


def evaluate(art: ToyArtifacts, *, split: str = "train", n_prompts: int = 64, n_samples: int = 8,
             seed: int = 0) -> ToyEvalReport:
    """Sample `n_samples` solutions and meta responses for the first `n_prompts` prompts of `split`."""
    import time

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    from masa.algo.meta import MetaPrediction, parse_meta, render_meta_prompt
    from masa.toy.task import extract_boxed_int

    recipe = art.recipe
    problems = load_problems(art.train_parquet if split == "train" else art.heldout_parquet, n_prompts)
    start = time.perf_counter()
    llm = LLM(model=str(art.model_dir), dtype="float32", gpu_memory_utilization=0.2, enforce_eager=True,
              max_model_len=recipe.max_model_len, seed=seed)
    tok = llm.get_tokenizer()

    def chat(text: str) -> str:
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                       add_generation_prompt=True)

    # No per-request seed: vLLM's CPU sampler fails with "CPU Generator does not use offset" when one is
    # set (vllm-cpu 0.32); the engine-wide seed above makes the run repeatable instead.
    params = SamplingParams(n=n_samples, temperature=1.0, top_p=1.0, max_tokens=recipe.max_response_tokens)
    sol = llm.generate([chat(q) for q, _ in problems], params, use_tqdm=False)
    g = recipe.n_solution  # the G the meta prompt names (and the model was warm-started on)
    meta = llm.generate([chat(render_meta_prompt(q, n_solution=g, max_response_tokens=recipe.max_response_tokens))
                         for q, _ in problems], params, use_tqdm=False)
    counts = tuple(sum(extract_boxed_int(o.text) == int(t) for o in out.outputs)
                   for (_, t), out in zip(problems, sol, strict=True))
    lengths = [len(o.token_ids) for out in sol for o in out.outputs]
    parsed = [[parse_meta(o.text, n_solution=g, max_response_tokens=recipe.max_response_tokens)
               for o in out.outputs] for out in meta]
    errors = [abs(m.pass_rate / g - k / n_samples) for k, group in zip(counts, parsed, strict=True)
              for m in group if isinstance(m, MetaPrediction)]
    n_meta = n_prompts * n_samples
    return ToyEvalReport(
        split=split, n_prompts=len(problems), n_samples=n_samples,
        pass_rate=sum(counts) / (len(problems) * n_samples),
        mixed_fraction=sum(0 < c < n_samples for c in counts) / len(problems),
        all_wrong_fraction=sum(c == 0 for c in counts) / len(problems),
        all_right_fraction=sum(c == n_samples for c in counts) / len(problems),
        meta_parse_rate=len(errors) / n_meta,
        meta_pass_rate_mae=sum(errors) / len(errors) if errors else None,
        mean_solution_tokens=sum(lengths) / len(lengths), seconds=round(time.perf_counter() - start, 2),
        correct_counts=counts)
