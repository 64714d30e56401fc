"""The DAG: configure → prepare → data filter → N rounds × (rollout → score → train) per branch →
benchmark of the base and final checkpoints (each one task, or `resources.benchmark_shards` tasks and a
merge) → promote (docs/promotion.md) → report.

Rounds and branches (GRPO baseline beside MASA when `compare`) are unrolled when the pipeline is
built from a `RunConfig`; the other settings are pipeline parameters, editable in the Kubeflow UI.
A run holds at most `MAX_TASKS_PER_RUN` tasks: a longer schedule is cut into segments of rounds
(`RunConfig.segments`), one run each. A later segment starts with one `resume` task per branch that
hands on the previous round's checkpoint and score history from the store; only the last segment
benchmarks and reports (docs/deploy.md, "Bounded runs").
(No `from __future__ import annotations` here: KFP reads the pipeline signature's real types.)
"""


from masa.components import build
from masa.config import UI_PARAMETERS, RunConfig, ui_defaults
from masa.pipeline.k8s import apply_step, cheap_task_checks, hub_access
from masa.steps.configure import stamp

ROUND_STEPS = ("rollout", "score", "train")


def _resources(task, cfg: RunConfig, step: str) -> None:
    """Requests, accelerators, volumes, deadline, placement, retries, caching, S3 Secret: pipeline/k8s.py."""
    apply_step(task, cfg, step)


def pipeline_name(cfg: RunConfig, segment: int = 0) -> str:
    n = len(cfg.segments)
    return f"masa-{cfg.name}" if n == 1 else f"masa-{cfg.name}-part{segment + 1}of{n}"


def build_pipeline(cfg: RunConfig, segment: int = 0, *, local: bool = False, scheduled: bool = False):
    """A KFP pipeline function for one segment of this configuration's rounds (call it under
    kfp.local with `local=True`, or compile it). `scheduled`: a recurring run, whose KFP run id is
    part of its identity when `promotion.retrain_if_data_unchanged` (masa.steps.configure)."""
    with cheap_task_checks():  # the DAG is built here, when @dsl.pipeline calls the function
        return _build(cfg, segment, local=local, scheduled=scheduled)


def _build(cfg: RunConfig, segment: int, *, local: bool, scheduled: bool):
    from kfp import dsl

    segments = cfg.segments
    if not 0 <= segment < len(segments):
        raise ValueError(f"segment {segment}: this configuration has segments 0..{len(segments) - 1}")
    rounds, last = segments[segment], segment == len(segments) - 1
    c = build(cfg.images)
    defaults = ui_defaults(cfg)
    config_json = cfg.to_json()
    # kfp.local 2.17.3 replaces every task-output parameter entering a ParallelFor with the loop item
    # (kfp/local/orchestrator/task_spec_utils.py), so local rollout shards take the configuration as a
    # constant: the compiled one stamped as configure stamps it (locally the UI parameters are the
    # compiled defaults; the data snapshot is part of the run's identity, masa.steps.configure)
    sharded = cfg.resources.rollout_shards > 1 or cfg.resources.benchmark_shards > 1
    local_cj = stamp(cfg).to_json() if local and sharded else None

    def step(task, name: str, display: str):
        _resources(task, cfg, name)
        task.set_display_name(display)
        return task

    @dsl.pipeline(name=pipeline_name(cfg, segment),
                  description=f"MASA RL: {' vs '.join(cfg.branches)}, rounds {rounds.start + 1}-{rounds.stop} "
                              f"of {cfg.rounds} (masa-pipeline)")
    def masa_pipeline(model: str = defaults["model"], train_data: str = defaults["train_data"],
                      store: str = defaults["store"], prompts_per_round: int = defaults["prompts_per_round"],
                      n_solution: int = defaults["n_solution"], n_meta: int = defaults["n_meta"],
                      learning_rate: float = defaults["learning_rate"],
                      temperature: float = defaults["temperature"],
                      max_response_tokens: int = defaults["max_response_tokens"], seed: int = defaults["seed"],
                      benchmark_datasets: list = defaults["benchmark_datasets"]):
        ui = {k: v for k, v in locals().items() if k in UI_PARAMETERS}  # the parameters declared above
        cj = _configure(c, cfg, step, config_json, ui, scheduled)

        prep = step(c.prepare(config_json=cj), "prepare", "prepare base model")
        base = prep.outputs["base_model"]
        data = step(c.data_filter(config_json=cj, base_model=base), "data_filter", "data filter")
        evals, histories, finals = {}, {}, {"base": base}
        for branch in cfg.branches:
            policy, history = base, None
            if rounds.start > 0:  # a later segment: the previous round's policy and history, from the store
                h = step(c.resume(config_json=cj, branch=branch, round_idx=rounds.start),
                         "resume", f"{branch} · resume after round {rounds.start}")
                policy, history = h.outputs["policy"], h.outputs["history"]
            for r in rounds:
                policy, history = _round(dsl, c, cfg, step, cj, local_cj, branch, r, data, policy, history)
            # the report compares GRPO with algorithm.name ("masa"); another baseline (plain MASA beside
            # MASA-efficient) is benchmarked as baseline-<branch>, its figures in that step's output
            key = "grpo" if branch == "grpo" else ("masa" if branch == cfg.algorithm.name else f"baseline-{branch}")
            if last:
                evals[key] = _benchmark(dsl, c, cfg, step, cj, local_cj, key, policy)
            histories[key], finals[key] = history, policy
        if last:
            base_eval = _benchmark(dsl, c, cfg, step, cj, local_cj, "base", base)
            _promote_report(c, cfg, step, cj, base, base_eval, evals, histories, finals)

    return masa_pipeline


def _configure(c, cfg: RunConfig, step, config_json: str, ui: dict, scheduled: bool):
    """configure (the UI parameters applied, the data snapshot stamped; never cached) and, with
    `resources.stage_inputs`, the stage step; returns the configuration every later step takes."""
    from kfp import dsl

    conf = step(c.configure(config_json=config_json, **ui,
                            **({"run_tag": dsl.PIPELINE_JOB_ID_PLACEHOLDER} if scheduled else {})),
                "configure", "configure")
    conf.set_caching_options(False)  # it measures the data snapshot: a cached one would hide new data
    if not cfg.resources.stage_inputs:
        return conf.output
    # hub inputs copied into the store once; later steps read only the store
    staged = step(c.stage(config_json=conf.output), "stage", "stage inputs")
    for task in (conf, staged):  # configure reads the data's hub revision, stage downloads
        hub_access(task, cfg.resources.hf_token_secret)
    return staged.output


def _benchmark(dsl, c, cfg: RunConfig, step, cj, local_cj: str | None, name: str, model):
    """One checkpoint's benchmark results: one task, or a ParallelFor of `benchmark_shards` tasks over
    slices of the problems and a merge."""
    n = cfg.resources.benchmark_shards
    if n == 1:
        return step(c.benchmark(config_json=cj, name=name, model=model), "benchmark",
                    f"benchmark · {name}").outputs["results"]
    with dsl.ParallelFor(list(range(n)), parallelism=n) as k:  # kfp.local: the constant config (build_pipeline)
        part = step(c.benchmark_shard(config_json=local_cj or cj, name=name, model=model, shard=k), "benchmark",
                    f"benchmark · {name} · shard")
    return step(c.merge_benchmarks(config_json=cj, name=name, shards=dsl.Collected(part.outputs["outcomes"])),
                "merge", f"benchmark · {name} · merge").outputs["results"]


def _promote_report(c, cfg: RunConfig, step, cj, base, base_eval, evals: dict, histories: dict, finals: dict):
    """The last run's end: the promote step and the report."""
    kwargs = {f"{k}_eval": v for k, v in evals.items() if k in ("grpo", "masa")}
    kwargs.update({f"{k}_history": v for k, v in histories.items() if k in ("grpo", "masa")})
    who = cfg.candidate
    # "benchmark" resources: it benchmarks the current model again when its figures are stale
    prom = step(c.promote(config_json=cj, candidate=finals[who], candidate_eval={"base": base_eval, **evals}[who]),
                "benchmark", "promote")
    prom.set_caching_options(False)  # it reads the registry's pointer, which other runs move
    step(c.report(config_json=cj, base_eval=base_eval, promotion=prom.outputs["promotion"], **kwargs),
         "report", "report")


def _round(dsl, c, cfg: RunConfig, step, cj, local_cj: str | None, branch: str, r: int, data, policy,
           history):
    """One round of a branch: rollout (one task, or shards and a merge), score, train. Returns the next
    policy and score history."""
    extra = {"history": history} if history is not None else {}
    rollouts = _rollout_round(dsl, c, cfg, step, cj, local_cj, branch, r, data, policy, extra)
    sc = step(c.score(config_json=cj, branch=branch, round_idx=r, rollouts=rollouts,
                      policy=policy, **extra), "score", f"{branch} · round {r + 1} · score")
    tr = step(c.train(config_json=cj, branch=branch, round_idx=r, policy=policy,
                      scored=sc.outputs["scored"]), "train", f"{branch} · round {r + 1} · train")
    return tr.outputs["new_policy"], sc.outputs["history_out"]


def _rollout_round(dsl, c, cfg: RunConfig, step, cj, local_cj: str | None, branch: str, r: int, data,
                   policy, extra):
    """The round's rollouts: one task, or a ParallelFor of `rollout_shards` tasks and a merge."""
    kw = dict(config_json=cj, branch=branch, round_idx=r, prompts=data.outputs["prompts"],
              heldout=data.outputs["heldout"], policy=policy, **extra)
    where, n = f"{branch} · round {r + 1}", cfg.resources.rollout_shards
    if n == 1:
        return step(c.rollout(**kw), "rollout", f"{where} · rollout").outputs["rollouts"]
    if local_cj is not None:  # kfp.local: the stamped configuration as a constant (see build_pipeline)
        kw["config_json"] = local_cj
    with dsl.ParallelFor(list(range(n)), parallelism=n) as k:
        ro = step(c.rollout(shard=k, **kw), "rollout", f"{where} · rollout shard")
    return step(c.merge_rollouts(config_json=cj, branch=branch, round_idx=r,
                                 shards=dsl.Collected(ro.outputs["rollouts"])),
                "merge", f"{where} · merge rollouts").outputs["rollouts"]
