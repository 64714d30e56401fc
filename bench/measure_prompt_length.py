"""Measures the prompt lengths of the `paper` preset's solution and meta prompts, in characters, over
real math problems, and the shortest meta response our parser takes for each; writes
bench/results/prompt_length.json (bench/paper_cost_model.py reads it).

    .venv/bin/python bench/measure_prompt_length.py        # ~2 s; needs ../shared/data/math

Characters, not tokens: no Qwen tokenizer can be had on this machine (nothing is downloaded), so the
cost model turns characters into tokens with a cited ratio and adds the chat template's tokens. The
problems are MATH's training split (../shared/data/math/train.parquet), not DeepScaleR's (the paper's
data, not on this machine): both are competition problems of a few sentences.

The meta floor is the canonical completion (`masa.algo.meta.format_meta_completion`) with no
reasoning, one notion (the problem's MATH subject) and values of the paper's range (pass rate 8 of 16,
a 4,500-token solution): what any parseable response has to write, so a lower bound on a real meta
response's length, which the released prompt asks to open with "comprehensive and detailed reasoning".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "math" / "train.parquet"
OUT = ROOT / "bench" / "results" / "prompt_length.json"


def measure(path: Path) -> dict:
    import pyarrow.parquet as pq

    from masa.algo.meta import format_meta_completion, render_meta_prompt
    from masa.algo.prompts import RELEASED_INSTRUCTION, solution_prompt
    from masa.config import load_config
    from masa.data.records import rows_to_problems

    cfg = load_config("paper")
    rows = pq.read_table(path).to_pylist()
    problems, rejected = rows_to_problems(rows, source=str(path))
    solution = [len(solution_prompt(p.problem, RELEASED_INSTRUCTION)) for p in problems]
    meta = [len(render_meta_prompt(solution_prompt(p.problem, RELEASED_INSTRUCTION),
                                   n_solution=cfg.algorithm.n_solution,
                                   max_response_tokens=cfg.rollout.max_response_tokens)) for p in problems]
    floor = [len(format_meta_completion("", notions=[rows[p.row].get("type") or "math"], pass_rate=8,
                                        solution_length=4500)) for p in problems]
    return {"problems": len(problems), "rejected": len(rejected),
            "solution_chars_mean": statistics.fmean(solution), "solution_chars_median": statistics.median(solution),
            "meta_chars_mean": statistics.fmean(meta), "meta_chars_median": statistics.median(meta),
            "meta_floor_response_chars_mean": statistics.fmean(floor)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a verl-layout parquet of math problems")
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"measure_prompt_length: no problems at {args.data} (see ../shared/data/README.md)")
    result = {"measured": date.today().isoformat(), "data": "../shared/data/math/train.parquet (MATH train)",
              "command": ".venv/bin/python bench/measure_prompt_length.py", **measure(args.data)}
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
