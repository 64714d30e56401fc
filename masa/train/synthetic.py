"""Synthetic scored/expert shards in the docs/rollout-shard.md schema, for tests and benchmarks.

Random token ids, advantages and log-probs: no model, no scoring. Columns the trainer does not read
are filled with plausible constants so the files are valid shards for every reader.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from masa.schemas import EXPERT_SCHEMA


def write_synthetic_shards(out_dir: str | Path, *, vocab_size: int, n_prompts: int = 4, n_solution: int = 4,
                           n_meta: int = 2, prompt_len: tuple[int, int] = (4, 12),
                           response_len: tuple[int, int] = (2, 24), n_experts: int = 2,
                           seed: int = 0) -> tuple[Path, Path]:
    """Write scored.parquet and experts.parquet into out_dir; returns their paths.

    Token ids avoid 0..2 (pad/special ids of the tiny test tokenizer). Lengths are uniform in the
    given inclusive ranges, so micro-batch packing and padding are exercised.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def toks(lo_hi: tuple[int, int]) -> list[int]:
        return [rng.randrange(3, vocab_size) for _ in range(rng.randint(*lo_hi))]

    rows, experts = [], []
    for g in range(n_prompts):
        prompt = toks(prompt_len)
        for path, n in (("solution", n_solution), ("meta", n_meta)):
            for i in range(n):
                resp = toks(response_len)
                reward = float(rng.random() < 0.5)
                rows.append({
                    "prompt_id": f"p{g}", "group_id": g, "path": path, "sample_idx": i, "round": 0,
                    "algorithm": "masa", "problem": "", "answer": "", "prompt_token_ids": prompt,
                    "response_token_ids": resp, "logprobs": [-rng.uniform(0.5, 4.0) for _ in resp],
                    "text": "", "finish_reason": "stop", "reward": reward,
                    "advantage": rng.uniform(-1.5, 1.5), "zero_variance": False,
                })
        if g < n_experts:
            experts.append({"prompt_id": f"p{g}", "prompt_token_ids": prompt,
                            "response_token_ids": toks(response_len), "text": "", "reward": 1.0})
    scored, exp = out / "scored.parquet", out / "experts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), scored)
    # token_weights left out: the trainer then clones every token with weight 1
    schema = pa.schema([f for f in EXPERT_SCHEMA if f.name != "token_weights"])
    pq.write_table(pa.Table.from_pylist(experts, schema=schema), exp)
    return scored, exp
