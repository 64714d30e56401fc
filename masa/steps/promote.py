"""The promote step: the run's candidate against the model in service, and the registry update.

The candidate (promotion.candidate: the MASA branch's final checkpoint by default) was benchmarked by
this run. The current model (`latest` of promotion.model_name in the store's registry) is compared on the
same benchmarks, k and seeds: its recorded figures are reused when they were measured with this run's
evaluation settings (`eval_key`), else it is benchmarked again here and the figures are recorded beside
it. `masa.algo.promotion.decide` rules; a promoted candidate is published as a new version (Hugging Face
directory + model card) and the pointer moves by compare-and-swap (masa.storage.registry). The record
this step writes (`PROMOTION_KEYS`, the report's "Promotion" section) says what was decided and why.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from masa.algo.promotion import Decision, Figures, binomial_stderr, combine, decide
from masa.config import RunConfig
from masa.runner.layout import Pointer, local_path_or_fetch, read_pointer, run_layout, write_pointer
from masa.runner.model_card import model_card
from masa.steps.benchmark import benchmark_step
from masa.storage import open_store, put_dir_atomic
from masa.storage.base import PreconditionFailedError
from masa.storage.registry import model_prefix, publish, read_latest, read_record, write_record
from masa.storage.registry import move_latest as _move_latest
from masa.train.checkpoint import STATE_DIR, STATE_FILE

PROMOTION_KEYS = ("decision", "reason", "model_name", "version", "candidate", "current", "margin")


def eval_key(cfg: RunConfig) -> str:
    """What makes two benchmark results comparable: benchmarks, k, sampling, seeds, prompts, budgets."""
    b = cfg.benchmark
    parts = [list(b.datasets), b.k, b.temperature, b.top_p, b.max_tokens, b.max_problems, cfg.seed,
             cfg.algorithm.n_solution, cfg.rollout.max_response_tokens, cfg.solution_instruction,
             cfg.data.max_prompt_tokens, cfg.toy_name if "toy" in b.datasets else ""]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def figures(results: dict[str, Any]) -> Figures:
    """One model's figures over every benchmark of a benchmark step's results (masa.runner.evaluate): the
    evaluation's standard error when it gave one, else the binomial one over its samples."""
    parts = []
    for r in results["benchmarks"].values():
        meta = r.get("meta") or {}
        se = r.get("accuracy_stderr")
        parts.append(Figures(accuracy=r["accuracy"], pass_rate_mae=meta.get("pass_rate_mae"),
                             accuracy_stderr=se if se is not None else binomial_stderr(r["accuracy"], r["n_problems"] * r["k"]),
                             pass_rate_mae_stderr=meta.get("pass_rate_mae_stderr")))
    return combine(parts)


def summary(uri: str, f: Figures) -> dict[str, Any]:
    return {"uri": uri, "accuracy": f.accuracy, "accuracy_stderr": f.accuracy_stderr, "pass_rate_mae": f.pass_rate_mae}


def current_results(cfg: RunConfig, store, name: str, version: str, work: Path) -> dict[str, Any]:
    """The current version's results under this run's evaluation settings: recorded, or measured now."""
    key = eval_key(cfg)
    record = read_record(store, name, version)
    if record.get("eval_key") == key and record.get("results"):
        return record["results"]
    evals = record.get("evals") or {}
    if key in evals:
        return evals[key]
    ptr = work / "current.json"
    write_pointer(ptr, Pointer(store=cfg.store, prefix=model_prefix(name, version), name="current"))
    benchmark_step(cfg, name="current", model_ptr=str(ptr), out_path=str(work / "current-results.json"))
    results = json.loads((work / "current-results.json").read_text())
    write_record(store, name, version, {**record, "evals": {**evals, key: results}})  # stale no more
    return results


def promote_step(cfg: RunConfig, *, candidate_ptr: str, candidate_eval: str, out_path: str) -> dict[str, Any]:
    """Compare, publish and move `latest` when the candidate wins; write the promotion record to `out_path`."""
    # scratch (model copies) away from the KFP output directory, whose files may be uploaded
    with tempfile.TemporaryDirectory(prefix="masa-promote-") as work:
        stats = _promote(cfg, candidate_ptr, candidate_eval, out_path, Path(work))
        # the decision, rejections included, also stays in the store beside the run, sealed like its parts
        (Path(work) / "record").mkdir()
        shutil.copy(out_path, Path(work) / "record" / "promotion.json")
        put_dir_atomic(open_store(cfg.store), str(Path(work) / "record"), f"{run_layout(cfg).run_id}/promotion")
    return stats


def _promote(cfg: RunConfig, candidate_ptr: str, candidate_eval: str, out_path: str, work: Path) -> dict[str, Any]:
    store, name = open_store(cfg.store), cfg.promotion.model_name or cfg.name
    results = json.loads(Path(candidate_eval).read_text())
    cand = figures(results)
    seen = read_latest(store, name)
    current, cur_record = None, {}
    if seen[0] is not None:
        cur_record = read_record(store, name, seen[0].version)
        if not cfg.promotion.retrain_if_data_unchanged and cur_record.get("data_snapshot") == cfg.data.snapshot:
            return _finish(out_path, name, "unchanged-data", f"the training data ({cfg.data.snapshot}) is the snapshot "
                           f"{seen[0].version} was trained on; nothing promoted (promotion.retrain_if_data_unchanged)",
                           summary(results["uri"], cand), None, 0.0, None)
        current = figures(current_results(cfg, store, name, seen[0].version, work))
    d = decide(cand, current, margin=cfg.promotion.margin, z=cfg.promotion.z)
    cur_summary = summary(store.uri(model_prefix(name, seen[0].version)), current) if current else None
    if not d.promote:
        return _finish(out_path, name, "rejected", d.reason, summary(results["uri"], cand), cur_summary, d.margin, None)
    version, d = _publish_and_move(cfg, store, name, candidate_ptr, results, cand, d, seen, work)
    decision = ("first" if current is None else "promoted") if version else "rejected"
    return _finish(out_path, name, decision, d.reason, summary(results["uri"], cand), cur_summary, d.margin, version)


def _publish_and_move(cfg, store, name, candidate_ptr, results, cand, d: Decision, seen, work):
    """(version, decision): publish the candidate and swap the pointer; (None, rejected) if another
    promotion moved the pointer since it was read (the version stays, unpointed)."""
    ptr = read_pointer(candidate_ptr)
    src = local_path_or_fetch(ptr.store, ptr.prefix, work / "cache")
    model = work / "model"
    shutil.rmtree(model, ignore_errors=True)
    # a registered model is the weights and what serves them: not the training state beside them
    # (~100 GB at 8B, or a service's upload still in flight: resources.train_state)
    shutil.copytree(src, model, ignore=shutil.ignore_patterns("MANIFEST.json", "toy-*.parquet", STATE_DIR, STATE_FILE))
    record = {"run_id": run_layout(cfg).run_id, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "data": cfg.data.train, "data_snapshot": cfg.data.snapshot, "base_model": _base_model(cfg, store),
              "candidate": results["uri"], "eval_key": eval_key(cfg), "results": results, "reason": d.reason,
              "config": cfg.to_dict()}
    (model / "README.md").write_text(model_card(name, record, cand))
    version = publish(store, name, str(model), record)
    try:
        _move_latest(store, name, version, expect=seen)
    except PreconditionFailedError as e:
        return None, Decision(False, f"another promotion moved {name}/latest since it was read ({e}); "
                                     f"{version} was published but not promoted", d.margin)
    return version, d


def _base_model(cfg: RunConfig, store) -> str:
    """The model the run started from: the version `latest:<name>` named then (the prepare step's stats)."""
    try:
        stats = json.loads(store.get_bytes(f"{run_layout(cfg).base('checkpoint')}/stats.json"))
    except (OSError, ValueError):
        return cfg.model
    return stats.get("model_resolved") or cfg.model


def _finish(out_path, name, decision, reason, cand, cur, margin, version) -> dict[str, Any]:
    record = dict(zip(PROMOTION_KEYS, (decision, reason, name, version, cand, cur, margin), strict=True))
    Path(out_path).write_text(json.dumps(record, indent=1))
    print(f"masa: promotion of {name}: {decision}: {reason}", flush=True)
    return {"decision": decision, "promoted": int(decision in ("promoted", "first")), "margin": margin,
            "candidate_accuracy": cand["accuracy"], "record": record}
