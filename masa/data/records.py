"""Load math problems from verl-layout parquet, JSONL, a Hugging Face dataset id or an `s3://` URI.

Every source becomes a list of `Problem` records; rows that cannot become one are returned as
`Rejected(index, reason, detail)` so callers can drop and count them by reason instead of crashing.
The verl layout (see `../shared/data/README.md`) is the canonical on-disk form: `write_verl_parquet`
writes it back, plus a stable `prompt_id` column.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    prompt_id: str
    problem: str
    answer: str
    solution: str | None = None
    data_source: str = ""
    extra: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Rejected:
    index: int
    reason: str  # short machine-readable reason, counted in reports
    detail: str


class DataError(ValueError):
    """A data source that cannot be read at all (missing file, unknown format)."""


# JSONL / HF column names accepted for the problem text and the reference answer, in order.
PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "target", "ground_truth", "solution_answer")


def normalise_text(text: str) -> str:
    """NFKC, unified newlines, trailing spaces stripped: two renderings of one problem compare equal."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def stable_id(problem: str, answer: str) -> str:
    return hashlib.sha256(f"{problem}\x00{answer}".encode()).hexdigest()[:16]


def _answer_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def _problem_from_verl(row: Mapping[str, Any]) -> tuple[str | None, str | None, str, str | None]:
    """(problem, answer, reason-if-bad, solution) from one verl-layout row."""
    prompt = row.get("prompt")
    if not isinstance(prompt, (list, tuple)) or not prompt:
        return None, None, "bad_prompt: `prompt` must be a non-empty list of {role, content}", None
    users = [m for m in prompt if isinstance(m, Mapping) and m.get("role") == "user"]
    if not users:
        return None, None, "bad_prompt: no user turn in `prompt`", None
    content = users[-1].get("content")
    if not isinstance(content, str):
        return None, None, f"bad_prompt: user content is {type(content).__name__}, not text", None
    rm = row.get("reward_model")
    gt = rm.get("ground_truth") if isinstance(rm, Mapping) else None
    if isinstance(gt, Mapping):
        answer, solution = _answer_text(gt.get("target")), gt.get("solution")
    else:
        answer, solution = _answer_text(gt), None
    if answer is None:
        return content, None, "missing_answer: reward_model.ground_truth.target absent or not text", None
    return content, answer, "", solution if isinstance(solution, str) else None


def _problem_from_flat(row: Mapping[str, Any], mapping: Mapping[str, str]) -> tuple[str | None, str | None, str, str | None]:
    pkey = mapping.get("problem") or next((k for k in PROBLEM_KEYS if k in row), None)
    akey = mapping.get("answer") or next((k for k in ANSWER_KEYS if k in row), None)
    if pkey is None or pkey not in row:
        return None, None, f"missing_problem: none of {', '.join(PROBLEM_KEYS)} present", None
    content = row[pkey]
    if isinstance(content, list):  # chat messages in a flat file
        return _problem_from_verl({"prompt": content, "reward_model": {"ground_truth": row.get(akey)}})
    if not isinstance(content, str):
        return None, None, f"bad_prompt: `{pkey}` is {type(content).__name__}, not text", None
    answer = _answer_text(row.get(akey)) if akey else None
    if answer is None:
        return content, None, f"missing_answer: none of {', '.join(ANSWER_KEYS)} present as text", None
    sol = row.get(mapping.get("solution", "solution"))
    return content, answer, "", sol if isinstance(sol, str) else None


def rows_to_problems(
    rows: Iterable[Mapping[str, Any]], *, source: str, mapping: Mapping[str, str] | None = None
) -> tuple[list[Problem], list[Rejected]]:
    """Validate raw rows; each becomes a Problem or a Rejected with its reason (never raises)."""
    kept: list[Problem] = []
    rejected: list[Rejected] = []
    for i, row in enumerate(rows):
        if isinstance(row, _Unparsable):
            rejected.append(Rejected(i, "bad_json", str(row)))
            continue
        if not isinstance(row, Mapping):
            rejected.append(Rejected(i, "bad_row", f"row is {type(row).__name__}, not an object"))
            continue
        if "prompt" in row and "reward_model" in row and not mapping:
            problem, answer, why, solution = _problem_from_verl(row)
        else:
            problem, answer, why, solution = _problem_from_flat(row, mapping or {})
        if why:
            reason, _, detail = why.partition(": ")
            rejected.append(Rejected(i, reason, detail))
            continue
        problem, answer = normalise_text(problem), normalise_text(answer)
        if not problem:
            rejected.append(Rejected(i, "empty_problem", "problem text is empty"))
            continue
        if not answer:
            rejected.append(Rejected(i, "empty_answer", "reference answer is empty"))
            continue
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), Mapping) else None
        kept.append(Problem(stable_id(problem, answer), problem, answer, solution,
                            str(row.get("data_source") or source), extra))
    return kept, rejected


def read_rows(source: str, *, split: str = "train", cache_dir: str | None = None) -> list[dict[str, Any]]:
    """Raw rows of a parquet / JSONL file, an `s3://` object, or a Hugging Face dataset id."""
    if source.startswith("s3://"):
        from masa.storage import open_store  # storage layer; imported lazily for the offline path

        bucket_prefix, _, name = source.rpartition("/")
        local = Path(cache_dir or os.environ.get("MASA_CACHE_DIR", Path.home() / ".cache" / "masa")) / "data"
        local.mkdir(parents=True, exist_ok=True)
        target = local / f"{hashlib.sha256(source.encode()).hexdigest()[:12]}-{name}"
        open_store(bucket_prefix).get_file(name, str(target))
        return read_rows(str(target), split=split)
    path = Path(source)
    if path.suffix in (".parquet", ".jsonl", ".json"):
        if not path.is_file():
            raise DataError(f"data file not found: {source}")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except Exception as e:  # corrupt or non-parquet file
                raise DataError(f"cannot read parquet file {source}: {e}") from e
        return _read_jsonl(path)
    if path.exists():
        raise DataError(f"unsupported data file {source}: expected .parquet, .jsonl or .json")
    if source.count("/") == 1 and not source.startswith((".", "/")):
        return _read_hf(source, split)
    raise DataError(f"data source not found: {source} (a .parquet/.jsonl path, s3:// URI or HF dataset id)")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows: list[Any] = []
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                rows.append(_Unparsable(f"line {n}: {e.msg}"))
    return rows


class _Unparsable(str):
    """A JSONL line that is not JSON; rows_to_problems rejects it as `bad_row`."""


def _read_hf(dataset_id: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, missing split
        raise DataError(f"cannot load Hugging Face dataset {dataset_id!r} (split {split!r}): {e}") from e
    return list(ds)


def load_problems(source: str, *, split: str = "train", mapping: Mapping[str, str] | None = None,
                  ) -> tuple[list[Problem], list[Rejected]]:
    return rows_to_problems(read_rows(source, split=split), source=source, mapping=mapping)


def write_verl_parquet(problems: Iterable[Problem], path: str | os.PathLike, *, split: str = "train") -> None:
    """Write problems in the verl layout (plus `prompt_id`), atomically (temp file, then rename)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "prompt_id": p.prompt_id,
            "data_source": p.data_source,
            "prompt": [{"role": "user", "content": p.problem}],
            "ability": "math",
            "reward_model": {"style": "rule",
                             "ground_truth": {"question": p.problem, "target": p.answer, "solution": p.solution or ""}},
            "extra_info": {"index": i, "split": split},
        }
        for i, p in enumerate(problems)
    ]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    os.replace(tmp, path)
