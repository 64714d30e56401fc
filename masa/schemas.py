"""The Arrow schemas of the shards passed between steps: one definition, used by every writer and reader.

    rollouts.parquet   written by the rollout step (masa.runner.rollout), read by scoring and the report
    scored.parquet     the rollout columns plus SCORED_COLUMNS (masa.runner.scoring), read by training,
                       telemetry (verifier outcomes) and the report
    experts.parquet    EXPERT_SCHEMA (masa.runner.scoring), read by training (behaviour cloning)

Column meanings: docs/rollout-shard.md. Readers name the columns they need from these lists and fail
with one line naming the missing ones (`require_columns`), so a column rename is one edit here.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

# values of the `path` column
SOLUTION, META = "solution", "meta"
PATHS = (SOLUTION, META)

ROLLOUT_SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("group_id", pa.int32()), ("path", pa.string()), ("sample_idx", pa.int32()),
    ("round", pa.int32()), ("algorithm", pa.string()), ("problem", pa.string()), ("answer", pa.string()),
    ("prompt_token_ids", pa.list_(pa.int32())), ("response_token_ids", pa.list_(pa.int32())),
    ("logprobs", pa.list_(pa.float32())), ("text", pa.string()), ("finish_reason", pa.string()),
    ("meta_pass_rate", pa.int32()), ("meta_solution_length", pa.int32()),
    ("meta_notions", pa.list_(pa.string())), ("meta_parse_error", pa.string()),
    ("gated", pa.bool_()), ("max_tokens", pa.int32()),
])

# what scoring writes into the rollout shard, in order: the meta_* columns rewritten with the fields this
# step's parser accepts, then the scoring columns appended
SCORED_COLUMNS = pa.schema([
    ("meta_pass_rate", pa.int32()), ("meta_solution_length", pa.int32()), ("meta_notions", pa.list_(pa.string())),
    ("meta_parse_error", pa.string()), ("correct", pa.bool_()), ("verifier_error", pa.string()),
    ("reward", pa.float32()), ("reward_pass_rate", pa.float32()), ("reward_length", pa.float32()),
    ("reward_notion", pa.float32()), ("advantage", pa.float32()), ("zero_variance", pa.bool_()),
    ("token_advantages", pa.list_(pa.float32())),
])

EXPERT_SCHEMA = pa.schema([("prompt_id", pa.string()), ("prompt_token_ids", pa.list_(pa.int32())),
                           ("response_token_ids", pa.list_(pa.int32())), ("text", pa.string()),
                           ("reward", pa.float32()), ("token_weights", pa.list_(pa.float32()))])

# the columns each reader needs (optional ones are read when present)
SCORING_NEEDS = ("prompt_id", "group_id", "path", "sample_idx", "problem", "answer", "prompt_token_ids",
                 "response_token_ids", "text", "finish_reason")
TRAINING_NEEDS = ("path", "prompt_token_ids", "response_token_ids", "logprobs", "advantage")
TRAINING_OPTIONAL = ("token_advantages",)  # absent: sequence-level credit (shards scored before it existed)
CLONING_NEEDS = ("prompt_token_ids", "response_token_ids")
CLONING_OPTIONAL = ("token_weights",)  # absent: every token cloned with weight 1
OUTCOME_NEEDS = ("path", "correct", "verifier_error", "text")
REPORT_LENGTH_NEEDS = ("prompt_id", "path", "response_token_ids", "finish_reason", "max_tokens")


def require_columns(columns: Iterable[str], needed: Iterable[str], where: str) -> None:
    """Raise ValueError naming the needed columns `columns` lacks (docs/rollout-shard.md)."""
    have = set(columns)
    missing = [c for c in needed if c not in have]
    if missing:
        raise ValueError(f"{where}: missing column(s) {', '.join(missing)}; see docs/rollout-shard.md")
