"""Steps before the rounds: the base model and the data filter.

`prepare_base` builds the embedded toy (model + task) or resolves the configured model, and
publishes it to the artifact store, so that every later step, on any node, reads the same verified
checkpoint. `filter_data` validates, normalises, de-duplicates, decontaminates and length-filters
the training problems and samples the held-out set; every dropped row is counted by reason.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

from masa.algo.prompts import solution_prompt
from masa.config import RunConfig
from masa.data.filter import (
    drop_benchmark_overlap,
    drop_exact_duplicates,
    drop_long_prompts,
    drop_near_duplicates,
)
from masa.data.records import (
    DataError,
    Problem,
    Rejected,
    load_problems,
    require_problems,
    write_rejections,
    write_verl_parquet,
)
from masa.runner.layout import Pointer, local_tokenizer, run_layout, run_once, write_pointer
from masa.storage import resolve_model
from masa.storage.registry import resolve_ref
from masa.toy import ToyRecipe, build, get_recipe

TOY = "toy"


def toy_artifacts(cfg: RunConfig, *, progress: bool = False):
    """The embedded toy, warm-started for this run's G and token budget (the values its meta
    prompt names), built once per recipe and cached. `masa run` calls it before the pipeline with
    progress on, so the build's minutes show on the terminal and the prepare step finds it cached."""
    return build(toy_recipe_for(cfg), progress=progress)


def toy_recipe_for(cfg: RunConfig) -> ToyRecipe:
    """The run's toy recipe: the named one with the run's G, token budget and toy seed."""
    return dataclasses.replace(get_recipe(cfg.toy_recipe), n_solution=cfg.algorithm.n_solution,
                               max_response_tokens=cfg.rollout.max_response_tokens, seed=cfg.toy_seed)


def prepare_base(cfg: RunConfig, *, model_out: str) -> dict[str, Any]:
    """Publish the base checkpoint (and, for the toy, its data) to the store; write a Model pointer."""
    layout = run_layout(cfg)
    prefix = layout.base("checkpoint")
    # `latest:<name>`: the version promoted now (masa.storage.registry), named in the part's fingerprint
    model_ref = cfg.model if cfg.model == TOY else resolve_ref(cfg.model, cfg.store)

    def produce(work: Path) -> dict[str, Any]:
        if cfg.model == TOY:
            art = toy_artifacts(cfg)
            src, extra = Path(art.model_dir), {"toy_warm_start": _plain(art.warm_start),
                                               "toy_build_s": art.build_seconds, "toy_cache_hit": art.cache_hit}
            shutil.copy(art.train_parquet, work / "toy-train.parquet")
            shutil.copy(art.heldout_parquet, work / "toy-heldout.parquet")
        else:
            src, extra = Path(resolve_model(model_ref)), {"model_resolved": model_ref}
        shutil.copytree(src, work, dirs_exist_ok=True)
        return {"model": cfg.model, **extra}

    fp = f"{model_ref}:{cfg.toy_name}:{cfg.algorithm.n_solution}:{cfg.rollout.max_response_tokens}"
    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(model_out, Pointer(store=cfg.store, prefix=prefix, name="base"))
    return stats


def heldout_subset(heldout: list[Problem], size: int, *, pool: int | None, seed: int) -> list[Problem]:
    """The rounds' held-out check: `size` problems drawn with `seed` from the first `pool` (the set the
    final benchmark scores), kept in source order. A sample, not the first `size`: held-out files are
    often ordered (by subject, by difficulty), and even the toy's shuffled one put 19 Level-1 problems
    in its first 64 against ~9 expected, so the per-round curve sat ~13 points above the benchmark."""
    candidates = heldout[:pool] if pool else heldout
    if len(candidates) <= size:
        return list(candidates)
    return [candidates[i] for i in sorted(random.Random(seed).sample(range(len(candidates)), size))]


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj




def filter_data(cfg: RunConfig, *, base_model: str, prompts_out: str, heldout_out: str,
                report_out: str, dropped_out: str | None = None) -> dict[str, Any]:
    """Filter training problems; write kept prompts, the held-out set, a Markdown summary and every
    dropped row (JSONL: row, reason, detail, prompt_id, stage) to `dropped_out`."""
    layout = run_layout(cfg)
    # tokenizer, config and toy parquets only: no weights (masa.runner.layout.local_tokenizer)
    base_dir = local_tokenizer(cfg.store, layout.base("checkpoint"), Path(base_model).parent / "cache")
    train_src = str(base_dir / "toy-train.parquet") if cfg.data.train == TOY else cfg.data.train
    heldout_src = (str(base_dir / "toy-heldout.parquet") if cfg.data.heldout == TOY else cfg.data.heldout)
    dropped: list[tuple[str, Rejected]] = []

    problems, rejected = load_problems(train_src, split=cfg.data.split)
    require_problems(problems, rejected, source=cfg.data.train)  # stop before loading benchmarks/tokenizer
    dropped += [("load", r) for r in rejected]
    n_in = len(problems) + len(rejected)
    heldout: list[Problem] = []
    if heldout_src:
        heldout, bad = load_problems(heldout_src, split="test")
        heldout = heldout_subset(heldout, cfg.data.heldout_size, pool=cfg.benchmark.max_problems, seed=cfg.seed)
        dropped += [("heldout", r) for r in bad]
    bench = [p.problem for p in heldout] + _benchmark_texts(cfg)
    count = _token_counter(base_dir, cfg)
    stages = (
        ("exact_duplicates", drop_exact_duplicates),
        ("near_duplicates", lambda ps: drop_near_duplicates(ps, n=cfg.data.near_dup_n,
                                                            threshold=cfg.data.near_dup_threshold)),
        ("benchmark_overlap", lambda ps: drop_benchmark_overlap(ps, bench, n=cfg.data.overlap_n,
                                                                threshold=cfg.data.overlap_threshold)),
        ("length", lambda ps: drop_long_prompts(ps, count, max_tokens=cfg.data.max_prompt_tokens)),
    )
    for stage, drop in stages:
        problems, d = drop(problems)
        dropped += [(stage, r) for r in d]
    counts = _count([r for stage, r in dropped if stage != "heldout"])
    counts.update({f"heldout_{k}": v for k, v in _count([r for st, r in dropped if st == "heldout"]).items()})
    if dropped_out:
        Path(dropped_out).write_text("")
        for stage in dict.fromkeys(st for st, _ in dropped):
            write_rejections([r for st, r in dropped if st == stage], dropped_out, stage=stage)
    if not problems:
        raise DataError(f"no usable training problems in {cfg.data.train}: all {n_in} rows dropped "
                        f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items())) or 'empty source'})")
    random.Random(cfg.seed).shuffle(problems)
    if cfg.data.max_prompts:
        problems = problems[: cfg.data.max_prompts]
    write_verl_parquet(problems, prompts_out, split="train")
    write_verl_parquet(heldout, heldout_out, split="heldout")
    stats = {"rows_in": n_in, "kept": len(problems), "heldout": len(heldout), "dropped": dict(sorted(counts.items()))}
    Path(report_out).write_text(_report_markdown(cfg, stats))
    return stats


def _count(rejected: list[Rejected]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rejected:
        out[r.reason] = out.get(r.reason, 0) + 1
    return out


def _benchmark_texts(cfg: RunConfig) -> list[str]:
    """Problem texts of every configured benchmark, for decontamination. An unreadable benchmark is
    an error here: skipping it would silently train on what may be its test set."""
    texts: list[str] = []
    for src in cfg.benchmark.datasets:
        if src == TOY:
            continue  # the toy benchmark is the held-out split, already included
        try:
            probs, _ = load_problems(src, split="test")
        except DataError as e:
            raise DataError(f"benchmark.datasets: cannot read {src} to decontaminate the training data: {e}") from e
        texts += [p.problem for p in probs]
    return texts


def _token_counter(model_dir: Path, cfg: RunConfig):
    """Prompt tokens of a problem as the rollout step will send it: the model's chat template around the
    instructed problem (`cfg.solution_instruction`). The meta prompt is not counted here (the toy's
    data set stays as it was); the rollout step drops, and counts, a problem whose meta prompt is over."""
    from transformers import AutoTokenizer


    tok = AutoTokenizer.from_pretrained(str(model_dir))

    def count(problem: str) -> int:
        text = solution_prompt(problem, cfg.solution_instruction)
        if tok.chat_template:
            return len(tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                               add_generation_prompt=True, return_dict=False))
        return len(tok(text)["input_ids"])

    return count


def _report_markdown(cfg: RunConfig, stats: dict[str, Any]) -> str:
    lines = [f"# Data filter: {cfg.data.train}", "", f"{stats['kept']} of {stats['rows_in']} problems kept; "
             f"{stats['heldout']} held out.", "", "| reason | dropped |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in stats["dropped"].items()] or ["| (none) | 0 |"]
    return "\n".join(lines) + "\n\n```json\n" + json.dumps(stats, indent=1) + "\n```\n"
