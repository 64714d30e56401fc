"""Load math problems from verl-layout parquet, JSONL/JSON, a Hugging Face dataset id or an `s3://` URI.

Every source becomes a list of `Problem` records; rows that cannot become one are returned as
`Rejected(index, reason, detail)` so callers drop and count them by reason instead of crashing.
`rows_to_problems` never raises on any row; a *source* that cannot be read at all (missing file,
unreadable parquet, unknown HF id, missing S3 object) raises `DataError` naming it.

Row reasons: `bad_json` (a JSONL line that is not JSON), `bad_row` (not an object),
`missing_problem`, `bad_prompt` (present but not text, or chat messages nested wrongly),
`missing_answer`, `bad_answer` (present but not a string/number: a list, a dict without `target`,
NaN, a bool, a `reward_model` that is not a mapping), `empty_problem`, `empty_answer`, `bad_text`
(not encodable as UTF-8, e.g. a lone surrogate from a JSON escape: parquet cannot store it),
`too_long` (over `max_chars`: guards the tokenizer and the n-gram filters against huge rows) and
`duplicate_id` (an explicit `id` field reused by a row with different content; the first wins).

A missing or empty reference answer is recovered from the last `\\boxed{...}` of the row's
solution when there is one: that is how MATH defines its answers, and it recovers the MATH rows
whose released `target` is empty. The verl layout (see `../shared/data/README.md`) is the canonical
on-disk form: `write_verl_parquet` writes it back, plus a stable `prompt_id` column.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masa.algo.verifier.extract import last_boxed
from masa.storage import StorageError, open_store


@dataclass(frozen=True)
class Problem:
    prompt_id: str  # content hash of (problem, answer): equal content, equal id, on every node
    problem: str
    answer: str
    solution: str | None = None
    data_source: str = ""
    extra: Mapping[str, Any] | None = None
    row: int = -1  # index of the source row (-1: built in code); rejections of later filters cite it


@dataclass(frozen=True)
class Rejected:
    index: int  # source row index
    reason: str  # short machine-readable reason, counted in reports
    detail: str
    prompt_id: str = ""  # set when the row had become a Problem (rejected by a filter)


class DataError(ValueError):
    """A data source that cannot be used at all (missing file, unknown format, no usable rows)."""


# JSONL / HF column names accepted for the problem text, the reference answer and an explicit id, in order.
PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "target", "ground_truth", "solution_answer")
ID_KEYS = ("id", "problem_id", "unique_id")
MAPPING_KEYS = ("problem", "answer", "solution", "id")
MAX_CHARS = 100_000  # far above any prompt budget (>= ~20k tokens); rows beyond it are junk or attacks
DATA_SUFFIXES = (".parquet", ".jsonl", ".json")
_MAX_DIGITS = 1000  # longer integer answers are junk; str() of one past 4300 digits raises
_MAX_INT = 10**_MAX_DIGITS


class _Reject(Exception):
    """Internal: this row becomes `Rejected(row, reason, detail)`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def normalise_text(text: str) -> str:
    """NFKC, unified newlines, trailing spaces stripped: two renderings of one problem compare equal."""
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def stable_id(problem: str, answer: str) -> str:
    return hashlib.sha256(f"{problem}\x00{answer}".encode()).hexdigest()[:16]


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _answer_text(value: Any, where: str) -> str | None:
    """The answer as text; None when absent. Raises _Reject for a present value of the wrong kind."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _Reject("bad_answer", f"{where} is {_kind(value)}, expected text or a number")
    if isinstance(value, numbers.Integral):
        if abs(int(value)) >= _MAX_INT:
            raise _Reject("bad_answer", f"{where} is an integer of more than {_MAX_DIGITS} digits")
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        raise _Reject("bad_answer", f"{where} is {value}, not a finite number")
    # 3.0 (an integer column read back as float) must match a model's "3"
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _answer_fields(gt: Any, where: str) -> tuple[str | None, Any]:
    """(answer, solution) from a ground truth that is a value or a `{target, solution}` mapping."""
    if isinstance(gt, Mapping):
        return _answer_text(gt.get("target"), f"{where}.target"), gt.get("solution")
    return _answer_text(gt, where), None


def _chat_user_text(messages: Any, where: str) -> str:
    """The last user turn of a chat-message list `[{role, content}, ...]`."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise _Reject("bad_prompt", f"{where} is {_kind(messages)}, expected a non-empty list of {{role, content}}")
    bad = next((i for i, m in enumerate(messages) if not isinstance(m, Mapping)), None)
    if bad is not None:
        raise _Reject("bad_prompt", f"{where}[{bad}] is {_kind(messages[bad])}, expected {{role, content}}")
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise _Reject("bad_prompt", f"no message with role 'user' in {where}")
    content = users[-1].get("content")
    if not isinstance(content, str):
        raise _Reject("bad_prompt", f"{where} user content is {_kind(content)}, not text")
    return content


def _verl_fields(row: Mapping[str, Any]) -> tuple[str, str | None, Any]:
    """(problem, answer, solution) of a verl-layout row."""
    prompt = row["prompt"]
    problem = prompt if isinstance(prompt, str) else _chat_user_text(prompt, "prompt")
    rm = row["reward_model"]
    if not isinstance(rm, Mapping):
        raise _Reject("bad_answer", f"reward_model is {_kind(rm)}, expected {{ground_truth: {{target, ...}}}}")
    answer, solution = _answer_fields(rm.get("ground_truth"), "reward_model.ground_truth")
    return problem, answer, solution


def _flat_fields(row: Mapping[str, Any], mapping: Mapping[str, str]) -> tuple[str, str | None, Any]:
    """(problem, answer, solution) of a flat row (JSONL, HF columns), column names per `mapping`."""
    pkey = mapping.get("problem") or next((k for k in PROBLEM_KEYS if k in row), None)
    if pkey is None or pkey not in row:
        raise _Reject("missing_problem", f"no `{pkey}` column" if pkey else f"none of {', '.join(PROBLEM_KEYS)} present")
    content = row[pkey]
    if isinstance(content, (list, tuple)):  # chat messages in a flat file
        content = _chat_user_text(content, pkey)
    elif not isinstance(content, str):
        raise _Reject("bad_prompt", f"`{pkey}` is {_kind(content)}, not text")
    akey = mapping.get("answer") or next((k for k in ANSWER_KEYS if k in row), None)
    answer, solution = _answer_fields(row.get(akey), f"`{akey}`") if akey else (None, None)
    return content, answer, row.get(mapping.get("solution", "solution"), solution)


def _row_problem(row: Any, i: int, *, source: str, mapping: Mapping[str, str], max_chars: int) -> Problem:
    """One raw row as a Problem; raises _Reject with the reason."""
    if isinstance(row, _Unparsable):
        raise _Reject("bad_json", str(row))
    if not isinstance(row, Mapping):
        raise _Reject("bad_row", f"row is {_kind(row)}, not an object")
    verl = "prompt" in row and "reward_model" in row and not mapping
    problem, answer, solution = _verl_fields(row) if verl else _flat_fields(row, mapping)
    solution = solution if isinstance(solution, str) else None
    boxed = last_boxed(solution) if solution and not (answer or "").strip() else None
    answer = answer if boxed is None else boxed  # a blank answer with no box stays blank: empty_answer
    if answer is None:
        raise _Reject("missing_answer", "no reference answer (" + ("reward_model.ground_truth.target" if verl
                      else ", ".join(ANSWER_KEYS)) + ") and no \\boxed{} in a solution")
    data_source = row.get("data_source")
    data_source = data_source if isinstance(data_source, str) and data_source else source
    for name, text in (("problem", problem), ("answer", answer), ("solution", solution or ""),
                       ("data_source", data_source)):
        if len(text) > max_chars:
            raise _Reject("too_long", f"{name} has {len(text)} characters > {max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Reject("bad_text", f"{name} is not valid Unicode text ({e.reason} at {e.start})") from None
    problem, answer = normalise_text(problem), normalise_text(answer)
    if not problem:
        raise _Reject("empty_problem", "problem text is empty")
    if not answer:
        raise _Reject("empty_answer", "reference answer is empty")
    extra = row.get("extra_info")
    return Problem(stable_id(problem, answer), problem, answer, solution, data_source,
                   extra if isinstance(extra, Mapping) else None, row=i)


def _explicit_id(row: Mapping[str, Any], mapping: Mapping[str, str]) -> str | None:
    key = mapping.get("id") or next((k for k in ID_KEYS if k in row), None)
    value = row.get(key) if key else None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or isinstance(value, int) and abs(value) >= _MAX_INT:
        return None  # no usable id: identity falls back to the content hash
    return str(value)


def rows_to_problems(
    rows: Iterable[Any], *, source: str, mapping: Mapping[str, str] | None = None, max_chars: int = MAX_CHARS,
) -> tuple[list[Problem], list[Rejected]]:
    """Validate raw rows; each becomes a Problem or a Rejected with its reason. Never raises on a row.

    `mapping` names the columns of flat rows (keys: problem, answer, solution, id). Rows sharing an
    explicit id (`id`, `problem_id`, `unique_id`) with *different* content are ambiguous labels: the
    first is kept, the others are `duplicate_id`. Same id and same content is an exact duplicate, left
    to `drop_exact_duplicates` so it is counted there.
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPING_KEYS))
    if unknown:
        raise DataError(f"column mapping: unknown keys {unknown}; valid keys: {', '.join(MAPPING_KEYS)}")
    kept: list[Problem] = []
    rejected: list[Rejected] = []
    ids: dict[str, Problem] = {}
    for i, row in enumerate(rows):
        try:
            p = _row_problem(row, i, source=source, mapping=mapping, max_chars=max_chars)
        except _Reject as r:
            rejected.append(Rejected(i, r.reason, r.detail))
            continue
        rid = _explicit_id(row, mapping)
        first = ids.setdefault(rid, p) if rid is not None else p
        if first.prompt_id != p.prompt_id:
            rejected.append(Rejected(i, "duplicate_id", f"id {rid!r} is already row {first.row} with different "
                                     "content", p.prompt_id))
            continue
        kept.append(p)
    return kept, rejected


def count_reasons(rejected: Iterable[Rejected]) -> dict[str, int]:
    """{reason: rows dropped}, sorted by reason."""
    return dict(sorted(Counter(r.reason for r in rejected).items()))


def summarize_rejections(rejected: Sequence[Rejected], *, examples: int = 2) -> str:
    """One line per reason, most frequent first, with the first `examples` rows and their details."""
    by_reason: dict[str, list[Rejected]] = {}
    for r in rejected:
        by_reason.setdefault(r.reason, []).append(r)
    lines = []
    for reason, rs in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = "; ".join(f"row {r.index}: {r.detail[:120]}" for r in rs[:examples])
        lines.append(f"{reason}: {len(rs)} ({shown}{'; ...' if len(rs) > examples else ''})")
    return "\n".join(lines)


def write_rejections(rejected: Iterable[Rejected], path: str | os.PathLike, *, stage: str = "") -> int:
    """Append every dropped row to a JSONL report (row, reason, detail, prompt_id, stage); returns the count."""
    n = 0
    with open(path, "a", encoding="utf-8") as f:
        for r in rejected:
            f.write(json.dumps({"row": r.index, "reason": r.reason, "detail": r.detail, "prompt_id": r.prompt_id,
                                "stage": stage}, ensure_ascii=False) + "\n")
            n += 1
    return n


def require_problems(problems: Sequence[Problem], rejected: Sequence[Rejected], *, source: str) -> None:
    """Stop early, saying why, when a source yields no usable problem (every row dropped, or none)."""
    if problems:
        return
    if not rejected:
        raise DataError(f"no problems in {source}: the source has no rows")
    raise DataError(f"no usable problems in {source}: all {len(rejected)} rows were dropped:\n"
                    + summarize_rejections(rejected))


def source_kind(source: Any) -> str:
    """"s3", "file" or "hf" for a data source judged without reading it; raises DataError naming it
    when it cannot be one (used before a run starts, so a typo fails in seconds, not after the model)."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"invalid data source {source!r}: expected a file path, s3:// URI or HF dataset id")
    if source.startswith("s3://"):
        bucket_prefix, _, name = source.rpartition("/")
        if not name.endswith(DATA_SUFFIXES) or bucket_prefix in ("s3:", "s3:/"):
            raise DataError(f"data URI {source}: expected s3://bucket/[prefix/]file with one of "
                            f"{', '.join(DATA_SUFFIXES)}")
        return "s3"
    path = Path(source)
    if path.suffix in DATA_SUFFIXES:
        if not path.is_file():
            raise DataError(f"data file not found: {source}")
        return "file"
    if path.exists():
        raise DataError(f"unsupported data file {source}: expected {', '.join(DATA_SUFFIXES)}")
    if source.count("/") == 1 and not source.startswith((".", "/", "~")):
        return "hf"
    raise DataError(f"data source not found: {source} (a .parquet/.jsonl/.json path, s3:// URI or HF dataset id)")


def check_sources(sources: Mapping[str, Any]) -> list[str]:
    """Every problem of `{config key: source}` at once, as "key: why" (empty: all look usable)."""
    problems = []
    for key, source in sources.items():
        try:
            source_kind(source)
        except DataError as e:
            problems.append(f"{key}: {e}")
    return problems


def read_rows(source: str, *, split: str = "train", cache_dir: str | None = None) -> list[Any]:
    """Raw rows of a parquet / JSONL / JSON file, an `s3://` object, or a Hugging Face dataset id."""
    kind = source_kind(source)
    if kind == "s3":
        return read_rows(_fetch_s3(source, cache_dir), split=split)
    if kind == "hf":
        return _read_hf(source, split)
    if source.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(source).to_pylist()
        except Exception as e:  # corrupt or non-parquet file: pyarrow raises several types
            raise DataError(f"cannot read parquet file {source}: {e}") from e
    return _read_json_lines(Path(source))


def _fetch_s3(uri: str, cache_dir: str | None) -> str:
    """Download the object `uri` (checked by `source_kind`) into the cache; the local path keeps its
    suffix, which names the format."""
    bucket_prefix, _, name = uri.rpartition("/")

    local = Path(cache_dir or os.environ.get("MASA_CACHE_DIR", Path.home() / ".cache" / "masa")) / "data"
    target = local / f"{hashlib.sha256(uri.encode()).hexdigest()[:12]}-{name}"
    try:
        local.mkdir(parents=True, exist_ok=True)
        open_store(bucket_prefix).get_file(name, str(target))
    except (StorageError, OSError, ValueError) as e:
        raise DataError(f"cannot fetch data {uri}: {e}") from e
    return str(target)


def _read_json_lines(path: Path) -> list[Any]:
    """Rows of a JSONL file, or of a `.json` file holding one array of rows."""
    # newline="": a JSONL record ends at "\n" only; a stray "\r" is JSON whitespace, not a row break
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        text = f.read()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:  # JSONDecodeError, or an integer beyond Python's digit limit
            raise DataError(f"cannot read {path}: not a JSON array ({e})") from None
        return rows
    out: list[Any] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            out.append(_Unparsable(f"line {n}: {e.msg} (column {e.colno})"))
        except ValueError as e:  # e.g. an integer beyond Python's 4300-digit limit
            out.append(_Unparsable(f"line {n}: {e}"))
    return out


class _Unparsable(str):
    """A JSONL line that is not JSON; rows_to_problems rejects it as `bad_json`."""


def _read_hf(dataset_id: str, split: str) -> list[Any]:
    try:
        import datasets

        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as e:  # offline, unknown id, missing split, datasets not installed
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        hint = " (HF_HUB_OFFLINE=1: only locally cached datasets load)" if offline else ""
        raise DataError(f"cannot load Hugging Face dataset {dataset_id!r} (split {split!r}){hint}: "
                        f"{type(e).__name__}: {e}") from e
    return list(ds)


def load_problems(source: str, *, split: str = "train", mapping: Mapping[str, str] | None = None,
                  max_chars: int = MAX_CHARS) -> tuple[list[Problem], list[Rejected]]:
    """Problems of `source` and the rows rejected; raises DataError only if the source is unreadable."""
    return rows_to_problems(read_rows(source, split=split), source=source, mapping=mapping, max_chars=max_chars)


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
