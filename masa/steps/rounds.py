"""The round steps as the pipeline runs them: rollout → score → train, per branch and round.

Each step reads its inputs through pointers (`masa.steps.layout`), runs one library entry point
(`masa.steps.rollout`, `masa.steps.scoring`, `masa.steps.train`) and publishes its part to the store
under a fingerprint of its inputs, so a rerun reuses finished parts and recomputes only the one that
was interrupted. Every branch sees the same prompts in the same round (same seed), so GRPO and MASA
differ only by algorithm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from masa.config import RunConfig, engine_parallelism
from masa.data.records import Problem, rows_to_problems
from masa.steps.layout import (
    STATS_FILE,
    corrupt_input,
    local_path_or_fetch,
    local_tokenizer,
    read_pointer,
    reusable,
    run_once,
    write_pointer,
)
from masa.steps.prepare import run_layout
from masa.steps.shards import ShardEngine, keep_own_rows, merge_stats, shard_prompt_ids
from masa.storage import CorruptArtifactError, open_store, put_dir_atomic

MANIFEST = "MANIFEST.json"
HISTORY = "history.json"  # in the round's `history` part: the score history up to this round


def algorithm_for(cfg: RunConfig, branch: str):
    return dataclasses.replace(cfg.algorithm, name=branch)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _manifest_digest(ptr: dict[str, Any]) -> str:
    data = open_store(ptr["store"]).get_bytes(f"{ptr['prefix']}/{MANIFEST}")
    return hashlib.sha256(data).hexdigest()[:16]


def local_model(ptr: dict[str, Any], cache_root: str | Path) -> Path:
    """A verified local copy of the checkpoint behind a Model pointer."""
    return local_path_or_fetch(ptr["store"], ptr["prefix"], cache_root)


def step_engine_config(cfg: RunConfig, step: Literal["rollout", "benchmark"], model_dir: str | Path,
                       max_model_len: int):
    """The engine of a rollout or benchmark step: its GPUs split by `masa.config.engine_parallelism`
    (tensor parallel size and replicas), sampling dtype and memory share from `rollout.*`."""
    from masa.engines import EngineConfig

    par = engine_parallelism(cfg, step)
    return EngineConfig(model=str(model_dir), backend=cfg.rollout.backend, dtype=cfg.rollout.dtype, seed=cfg.seed,
                        gpu_memory_utilization=cfg.rollout.gpu_memory_utilization, max_model_len=max_model_len,
                        tensor_parallel_size=par.tensor_parallel_size, replicas=par.replicas)


def toy_source(cfg: RunConfig, cache_root: str | Path, split: str = "heldout") -> str:
    """The toy task's parquet of `split`, shipped beside the base checkpoint in the store."""
    base = local_path_or_fetch(cfg.store, run_layout(cfg).base("checkpoint"), Path(cache_root) / "base")
    return str(base / f"toy-{split}.parquet")


def read_problems(path: str) -> list[Problem]:
    """Problems of a parquet Dataset artifact written by the data filter (KFP paths carry no suffix)."""
    import pyarrow.parquet as pq

    problems, rejected = rows_to_problems(pq.read_table(path).to_pylist(), source=path)
    if rejected:
        raise ValueError(f"{path}: {len(rejected)} rows are not problems (first: {rejected[0]})")
    return problems


def round_prompts(prompts_path: str, round_idx: int, n: int, seed: int) -> list[Problem]:
    """The round's prompts: consecutive slices of one seeded permutation (wrapping), so every
    prompt is seen once before any is seen twice, and all branches get the same ones."""
    problems = read_problems(prompts_path)
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    start = (round_idx * n) % len(order)
    idx = [order[(start + i) % len(order)] for i in range(min(n, len(order)))]
    return [problems[i] for i in idx]


def _history(path: str | None) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text()) if path else []


def rollout_step(cfg: RunConfig, *, branch: str, round_idx: int, prompts_path: str, policy_ptr: str,
                 history_path: str | None, out_ptr: str, heldout_path: str | None = None,
                 shard: int = 0) -> dict[str, Any]:
    """Roll out the round's prompts; also measure the policy's held-out accuracy (the report's
    accuracy-per-round curve) with the benchmark's sampling settings, on the same engine. With
    `resources.rollout_shards` > 1, only shard `shard`'s prompts (`masa.steps.shards`; shard 0
    alone measures the held-out accuracy)."""
    from masa.engines import make_engine
    from masa.steps.rollout import SamplingSettings, run_rollout_step

    layout, ptr, shards = run_layout(cfg), read_pointer(policy_ptr), cfg.resources.rollout_shards
    prefix = layout.part(branch, round_idx, "rollouts" if shards == 1 else f"rollouts-shard-{shard}")
    problems = round_prompts(prompts_path, round_idx, cfg.prompts_per_round, cfg.seed)
    # gating acts on each prompt's median prediction, so its reliability is the median's error
    maes = [h["meta_pass_rate_mae_median"] for h in _history(history_path)
            if h.get("meta_pass_rate_mae_median") is not None]
    algo = algorithm_for(cfg, branch)
    settings = SamplingSettings.from_rollout_config(cfg.rollout, max_prompt_tokens=cfg.data.max_prompt_tokens,
                                                   solution_instruction=cfg.solution_instruction)
    fp = _digest(_manifest_digest(ptr), [p.prompt_id for p in problems], dataclasses.asdict(algo),
                 dataclasses.asdict(settings), round_idx, cfg.seed, maes, shard, shards)

    heldout = read_problems(heldout_path) if heldout_path and shard == 0 else []
    all_ids = [p.prompt_id for p in problems]
    own = shard_prompt_ids(all_ids, shard, shards)

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-rollout-") as tmp:
            model_dir = local_model(ptr, tmp)
            engine = make_engine(step_engine_config(cfg, "rollout", model_dir, settings.max_prompt_tokens
                                                    + max(settings.max_response_tokens, cfg.benchmark.max_tokens)))
            gen = engine if shards == 1 else ShardEngine(engine, own, all_ids, seed=cfg.seed, round_index=round_idx,
                                                         all_meta=algo.efficient)
            try:
                stats = dataclasses.asdict(run_rollout_step(
                    problems, str(model_dir), work, algorithm=algo, settings=settings, round_index=round_idx,
                    seed=cfg.seed, mae_history=maes, engine=gen))
                if shards > 1:
                    stats = keep_own_rows(work / "rollouts.parquet", own, stats)
                stats["startup_s"] = engine.startup_s
                if heldout:
                    stats["heldout"] = heldout_accuracy(cfg, engine, heldout)
            finally:
                engine.close()
        return stats

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, store=cfg.store, prefix=prefix, kind="rollouts", shard=shard)
    return stats


def merge_rollouts_step(cfg: RunConfig, *, branch: str, round_idx: int, shard_ptrs: list[str],
                        out_ptr: str) -> dict[str, Any]:
    """One round's rollout shard from its `rollout_shards` parts, in shard (= prompt) order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ptrs = sorted((read_pointer(p) for p in shard_ptrs), key=lambda p: p["shard"])
    if [p["shard"] for p in ptrs] != list(range(cfg.resources.rollout_shards)):
        raise ValueError(f"{branch} round {round_idx + 1}: got shards {[p['shard'] for p in ptrs]}, "
                         f"expected 0..{cfg.resources.rollout_shards - 1}")
    prefix = run_layout(cfg).part(branch, round_idx, "rollouts")
    fp = _digest([_manifest_digest(p) for p in ptrs])

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-merge-") as tmp:
            parts = [local_path_or_fetch(p["store"], p["prefix"], tmp) for p in ptrs]
            table = pa.concat_tables([pq.read_table(d / "rollouts.parquet") for d in parts])
            pq.write_table(table, work / "rollouts.parquet")
            return merge_stats([json.loads((d / STATS_FILE).read_text()) for d in parts])

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, store=cfg.store, prefix=prefix, kind="rollouts")
    return stats


def heldout_accuracy(cfg: RunConfig, engine, problems: list[Problem]) -> dict[str, Any]:
    """Accuracy of the engine's policy on the held-out problems, sampled as the benchmark samples."""
    from masa.steps.evaluate import EvalSettings, evaluate

    b = cfg.benchmark
    s = EvalSettings(k=b.k, temperature=b.temperature, top_p=b.top_p, max_tokens=b.max_tokens,
                     n_solution=cfg.algorithm.n_solution, max_prompt_tokens=cfg.data.max_prompt_tokens, seed=cfg.seed,
                     solution_instruction=cfg.solution_instruction)
    r = evaluate(engine, problems, s, meta=False)
    return {"accuracy": r["accuracy"], "accuracy_stderr": r["accuracy_stderr"], "n_problems": r["n_problems"],
            "k": r["k"], "tokens": r["tokens"]}


def score_step(cfg: RunConfig, *, branch: str, round_idx: int, rollouts_ptr: str, policy_ptr: str,
               history_path: str | None, out_ptr: str, history_out: str) -> dict[str, Any]:
    from masa.steps.scoring import score_shard
    from masa.telemetry import verifier_outcomes

    layout, rptr, ptr = run_layout(cfg), read_pointer(rollouts_ptr), read_pointer(policy_ptr)
    prefix = layout.part(branch, round_idx, "scored")
    algo = algorithm_for(cfg, branch)
    fp = _digest(_manifest_digest(rptr), dataclasses.asdict(algo), cfg.rollout.max_response_tokens)

    def produce(work: Path) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="masa-score-") as tmp:
            shard = local_path_or_fetch(rptr["store"], rptr["prefix"], Path(tmp) / "r")
            # the tokenizer re-tokenizes expert targets; the weights are not needed here
            model_dir = local_tokenizer(ptr["store"], ptr["prefix"], Path(tmp) / "m")
            stats = score_shard(str(shard / "rollouts.parquet"), str(work), tokenizer_path=str(model_dir), algo=algo,
                                max_response_tokens=cfg.rollout.max_response_tokens)
        # cached with the stats, so a reused part reports the same outcomes
        stats["verifier_outcomes"] = verifier_outcomes(work / "scored.parquet")
        return stats

    stats = run_once(cfg.store, prefix, fp, produce)
    write_pointer(out_ptr, store=cfg.store, prefix=prefix, kind="scored")
    record = {"round": round_idx, **{k: stats.get(k) for k in ("train_accuracy", "meta_pass_rate_mae",
                                                              "meta_pass_rate_mae_median", "gated_prompts",
                                                              "cutoff_samples")}}
    history = [h for h in _history(history_path) if h["round"] != round_idx] + [record]
    Path(history_out).write_text(json.dumps(history, indent=1))
    # also in the store, where the next segment's `resume` finds it (docs/deploy.md, "Bounded runs"): a part
    # of its own, files first and manifest last like every artifact, so `masa store verify` covers it
    with tempfile.TemporaryDirectory(prefix="masa-history-") as tmp:
        Path(tmp, HISTORY).write_text(json.dumps(history, indent=1))
        put_dir_atomic(open_store(cfg.store), tmp, layout.part(branch, round_idx, "history"))
    return stats


def resume_step(cfg: RunConfig, *, branch: str, round_idx: int, policy_ptr: str, history_out: str) -> dict[str, Any]:
    """A segment's start: point at round `round_idx - 1`'s checkpoint and copy its score history.
    Fails, naming the round, when that round has not finished (run the earlier segment first)."""
    layout, store, prev = run_layout(cfg), open_store(cfg.store), round_idx - 1
    prefix, hist = layout.part(branch, prev, "checkpoint"), layout.part(branch, prev, "history")
    missing = [k for k in (f"{prefix}/{MANIFEST}", f"{hist}/{MANIFEST}") if not store.exists(k)]
    if missing:
        raise FileNotFoundError(f"{branch} round {prev + 1} has not finished ({store.uri(missing[0])} is missing): "
                                f"run the segment that ends with round {prev + 1} first")
    history = json.loads(store.get_bytes(f"{hist}/{HISTORY}"))
    write_pointer(policy_ptr, store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=prev)
    Path(history_out).write_text(json.dumps(history, indent=1))
    return {"rounds_done": len(history)}


def train_config_for(cfg: RunConfig, branch: str, round_idx: int):
    """The branch's TrainConfig: behaviour cloning only for MASA branches (`masa.steps.train`) and a
    seed per round so each round shuffles its micro-batches differently. The trainer's temperature
    stays 1: the engines record raw (T=1) log-probs as the "old" policy (docs/engines.md), so the
    ratio is exactly 1 before the first update whatever the sampling temperature."""
    from masa.steps.train import train_config_for as base

    tcfg = base(dataclasses.replace(cfg, algorithm=algorithm_for(cfg, branch), compare=False))
    return dataclasses.replace(tcfg, temperature=1.0, seed=cfg.seed * 1000 + round_idx)


def _train(cfg: RunConfig, branch: str, round_idx: int, model_uri: str, scored: Path, out_uri: str,
           resume_uri: str, tcfg, on_step) -> dict[str, Any]:
    """One node: DeepSpeed ranks in this pod. Several nodes: a Kubeflow Trainer TrainJob, which
    reads its inputs from the store (so they must be S3 URIs the nodes can reach)."""
    from masa.steps.train import train_round, train_round_trainjob

    experts = scored / "experts.parquet"
    if cfg.resources.train_nodes == 1:
        return train_round(model_uri, str(scored / "scored.parquet"), str(experts) if experts.exists() else None,
                           out_uri, tcfg, nproc=cfg.train_processes, resume_root=resume_uri, on_step=on_step)
    from masa.train.trainjob import job_name, new_attempt

    r = cfg.resources
    layout, store = run_layout(cfg), open_store(cfg.store)
    scored_uri = store.uri(layout.part(branch, round_idx, "scored"))
    settings = trainjob_settings(cfg)
    return train_round_trainjob(model_uri, f"{scored_uri}/scored.parquet",
                                f"{scored_uri}/experts.parquet" if experts.exists() else None, out_uri, tcfg,
                                settings=settings, name=job_name(layout.run_id, branch, round_idx,
                                                                 attempt=new_attempt()),
                                resume_root=resume_uri, on_step=on_step, timeout_s=max(60, r.gpu_timeout_s - 300))


def prune_train_states(store, layout, branch: str, round_idx: int, keep: int) -> list[int]:
    """Delete the DeepSpeed state of rounds <= round_idx - keep (manifest first, so a crash leaves an
    incomplete prefix that is never loaded); the models stay. Returns the rounds pruned."""
    from masa.storage import MANIFEST
    from masa.train.checkpoint import STATE_DIR

    pruned = []
    for r in range(round_idx - keep, -1, -1) if keep else ():
        state = f"{layout.part(branch, r, 'checkpoint')}/{STATE_DIR}"
        if not store.list(f"{state}/"):
            break  # pruned by an earlier round: so are all before it
        store.delete(f"{state}/{MANIFEST}")
        store.delete(f"{state}/")
        pruned.append(r)
    return pruned


def trainjob_settings(cfg: RunConfig):
    """The TrainJob's size and image for `resources.train_nodes` > 1: one node per pod, a rank per GPU, in
    this pod's namespace (a profile namespace may forbid others)."""
    from masa.train.trainjob import TrainJobSettings, current_namespace

    r = cfg.resources
    return TrainJobSettings(image=cfg.images.deepspeed, num_nodes=r.train_nodes, proc_per_node=r.train_gpus,
                            namespace=current_namespace(), accelerator=r.accelerator_type, s3_secret=r.s3_secret)


def train_step(cfg: RunConfig, *, branch: str, round_idx: int, policy_ptr: str, scored_ptr: str,
               out_ptr: str, on_step=None) -> dict[str, Any]:
    """Train on the round's scored shard. The trainer publishes the checkpoint itself (manifest last);
    our stats, with the input fingerprint, go to their own sealed part `<prefix>-stats/stats.json`
    (the checkpoint holds only the model's own files)."""
    layout, ptr, sptr = run_layout(cfg), read_pointer(policy_ptr), read_pointer(scored_ptr)
    prefix = layout.part(branch, round_idx, "checkpoint")
    store = open_store(cfg.store)
    tcfg = train_config_for(cfg, branch, round_idx)
    fp = _digest(_manifest_digest(ptr), _manifest_digest(sptr), dataclasses.asdict(tcfg), cfg.train_processes,
                 cfg.resources.train_nodes)
    stats, why = reusable(cfg.store, prefix, fp, stats_key=train_stats_key(prefix))
    if stats is None:
        started = time.time()
        policy_store = open_store(ptr["store"])
        with tempfile.TemporaryDirectory(prefix="masa-train-in-") as tmp:
            scored = local_path_or_fetch(sptr["store"], sptr["prefix"], tmp)
            try:
                result = _train(cfg, branch, round_idx, policy_store.uri(ptr["prefix"]), scored,
                                store.uri(prefix), store.uri(layout.part(branch, round_idx, "resume")), tcfg, on_step)
            except CorruptArtifactError as e:  # the policy, found corrupt while staging it
                if e.uri.rstrip("/") != policy_store.uri(ptr["prefix"]).rstrip("/"):
                    raise
                raise corrupt_input(policy_store, ptr["prefix"], e) from e
        stats = {**summarize_steps(result["steps"]), "global_step": result["global_step"],
                 "resumed_from": result["resumed_from"], "fingerprint": fp, "started_at": started,
                 "finished_at": time.time()}
        with tempfile.TemporaryDirectory(prefix="masa-train-stats-") as tmp:
            Path(tmp, STATS_FILE).write_text(json.dumps(stats, sort_keys=True, indent=1))
            put_dir_atomic(store, tmp, train_stats_key(prefix).rsplit("/", 1)[0])
        stats = {**stats, "reused": False, **({"recomputed": why} if why else {})}
        prune_train_states(store, layout, branch, round_idx, cfg.resources.keep_train_states)
    else:
        stats = {**stats, "reused": True}
    write_pointer(out_ptr, store=cfg.store, prefix=prefix, kind="checkpoint", name=branch, round=round_idx)
    return stats


def train_stats_key(prefix: str) -> str:
    """Where the train step's stats live: a sealed part of their own beside the checkpoint."""
    return f"{prefix}-stats/{STATS_FILE}"


def summarize_steps(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each numeric per-step metric over the round, plus the total wall time."""
    out: dict[str, Any] = {"optimizer_steps": len(steps)}
    keys = {k for s in steps for k, v in s.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k in sorted(keys):
        vals = [s[k] for s in steps if isinstance(s.get(k), (int, float))]
        out[k] = sum(vals) / len(vals)
    out["wall_s"] = sum(s.get("seconds", 0.0) for s in steps)
    return out
