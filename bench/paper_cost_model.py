"""Cost model of one paper-scale round (the `paper` preset: Qwen3-8B-Base, 128 prompts x (16 + 16)
rollouts of up to 8,192 tokens, 8 GPUs per step), per part, for the pipeline as it stood and for
the designs considered; plus the size model of a submitted run (tasks, IR bytes, Workflow bytes).

    .venv/bin/python bench/paper_cost_model.py                # table
    .venv/bin/python bench/paper_cost_model.py --json         # one object: a key per design
    .venv/bin/python bench/paper_cost_model.py --s3-MBps 1000 # what-if: a faster object store

Every constant (bench/cost_constants.py) is labelled: MEASURED here (bench/results/cost_constants_cpu.json, written by
bench/measure_cost_constants.py, with its command; docs/storage.md for the S3 figures of the
store's own bench; the training MFU on the one H200 lent, by bench/gpu_mfu_8b.sh), or CITED (source
given); ASSUMED marks only the what-ifs (--s3-MBps, the break-evens, the ranges). Where no run of
the paper's setting gives a figure the model takes the end that makes the overhead share larger (the
meta response at its parseable floor, the inert share at its cited low end, training at one GPU's
rate with no ZeRO collectives). Time per round is per branch: branches run side by side on their own
GPUs, so a round's wall time is one branch's chain rollout -> score -> train.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from cost_constants import GPU_RUN, MIB, Const, constants  # noqa: E402, F401  (GPU_RUN: the tests read it)

GB = 1e9


def generation_s(c: dict[str, Const], gpus: int = 8, mem_util: float = 0.85) -> float:
    """Decode on `gpus` one-GPU replicas, memory-bound roofline: each step reads the weights and
    the KV cache of the running sequences; the longest sequence (8,192 tokens) bounds the tail."""
    v = {k: x.value for k, x in c.items()}
    weights = v["params"] * 2
    kv_per_token = 2 * v["layers"] * v["kv_heads"] * 128 * 2
    seqs = 128 * 16 * 2
    tokens = 128 * 16 * (v["mean_response_tokens"] + v["meta_response_tokens"])
    # mean context at a step: the mean of a solution's and a meta sequence's prompt, plus half the mean response
    ctx = (v["prompt_tokens"] + v["meta_prompt_tokens"]) / 2 + (v["mean_response_tokens"] + v["meta_response_tokens"]) / 4
    kv_budget = v["gpu_mem_GB"] * GB * mem_util - weights
    batch = min(seqs / gpus, kv_budget / (ctx * kv_per_token))
    bw = v["hbm_TBps"] * 1e12 * v["decode_efficiency"]
    step = (weights + batch * ctx * kv_per_token) / bw
    bulk = tokens / gpus / (batch / step)
    tail = 8192 * weights / bw  # one sequence decoding alone at the end
    return max(bulk, tail)


def training_s(c: dict[str, Const], gpus: int = 8) -> float:
    v = {k: x.value for k, x in c.items()}
    def flops(seq: float, n: float) -> float:  # PaLM convention: 6N per token plus attention
        return n * seq * (6 * v["flop_params"] + 12 * v["layers"] * v["attn_width"] * seq)

    # 128 x 16 solution and 128 x 16 meta sequences; inert solution rollouts (advantage 0) are not computed
    solution = flops(v["prompt_tokens"] + v["mean_response_tokens"], 128 * 16 * (1 - v["inert_share"]))
    meta = flops(v["meta_prompt_tokens"] + v["meta_response_tokens"], 128 * 16)
    return (solution + meta) / (v["train_mfu"] * v["peak_bf16"] * gpus)


LOADERS = ("default", "fast")


def round_parts(c: dict[str, Const], *, s3_down: float, s3_up: float, tasks_per_round: float,
                extra_tasks_per_segment: float = 0.0, cache_hits_per_segment: float = 0.0,
                rounds_per_run: int = 50, vol_read: float = 0.0,
                vol_write: float = 0.0, engine_start: bool = True, trainer_start: bool = True,
                snapshot: float = 0.0, loader: str = "default") -> dict[str, float]:
    """Seconds per round and branch, by part. `s3_*`, `vol_*` and `snapshot` are bytes per round:
    through S3, through a shared volume (at this box's measured local-store rates), and copied GPU ->
    host memory over PCIe (each GPU its ZeRO partition, in parallel) for a background S3 upload.
    `loader`: how a starting vLLM reads the weights (`LOADERS`, rollout.load_format's rates, cited);
    an engine that stays up (`engine_start=False`) takes new weights in place, over PCIe."""
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; valid: {', '.join(LOADERS)}")
    v = {k: x.value for k, x in c.items()}
    # a task runs its driver pod, then its executor pod; a cache hit only the driver
    sched = ((tasks_per_round + extra_tasks_per_segment / rounds_per_run) * v["pods_per_task"]
             + cache_hits_per_segment / rounds_per_run) * v["pod_start_s"]
    pcie = v["pcie_GBps"] * GB * v["pcie_efficiency"]
    return {
        "generation": generation_s(c),
        "scoring": 128 * 16 / v["verify_per_s"],
        "training": training_s(c),
        "engine_start": (v["vllm_start_s"] + v["deepspeed_start_s"] * trainer_start) if engine_start else 0.0,
        # the pod's local copy -> a starting engine's GPU (each replica its own, side by side), or the
        # trainer's weights into an engine that stays up
        "model_load": weights_bytes(c) / (v[f"load_{loader}_GBps"] * GB if engine_start else pcie),
        "checkpoint_load": s3_down / (v["s3_down_MBps"] * 1e6) + vol_read / (v["vol_read_MBps"] * 1e6),
        "checkpoint_save": (s3_up / (v["s3_up_MBps"] * 1e6) + vol_write / (v["vol_write_MBps"] * 1e6)
                            + snapshot / (pcie * 8)),
        "pipeline_scheduling": sched,
    }


def weights_bytes(c: dict[str, Const]) -> float:
    """The consolidated bf16 checkpoint: what a rollout engine loads."""
    return c["params"].value * c["ckpt_bytes_per_param"].value


def state_bytes(c: dict[str, Const]) -> float:
    """The resumable training state: what the next train step needs to continue AdamW."""
    return c["params"].value * c["state_bytes_per_param"].value


def background_excess(c: dict[str, Const], parts: dict[str, float], upload_bytes: float) -> float:
    """Seconds a round waits for a background S3 upload of `upload_bytes` per round: none while the
    upload fits in the round's own time, the excess when the store is too slow to keep up."""
    return max(0.0, upload_bytes / (c["s3_up_MBps"].value * 1e6) - sum(parts.values()))


USEFUL = ("generation", "scoring", "training")


def summarize(parts: dict[str, float], **extra) -> dict:
    total = sum(parts.values())
    overhead = total - sum(parts[k] for k in USEFUL)
    return {"overhead_share": overhead / total, "round_s": total, "parts_s": parts, **extra}


def designs(c: dict[str, Const]) -> dict[str, dict]:
    from masa.config import load_config

    cfg = load_config("paper")
    k, every = len(cfg.segments[0]), cfg.resources.state_every_runs
    loader = {"auto": "default", "fastsafetensors": "fast"}[cfg.rollout.load_format]
    w, st = weights_bytes(c), state_bytes(c)
    runs = {"runs": len(cfg.segments), "fits_etcd": True}
    # on a run's path before its rounds: configure (never cached) and a branch's resume, which run, and
    # prepare and the data filter, cache hits after the first run (docs/deploy.md, "Bounded runs")
    seg = {"extra_tasks_per_segment": 2, "cache_hits_per_segment": 2, "rounds_per_run": k}

    def kept_up(tasks: float, **kw) -> dict[str, float]:
        """Engines that stay up: the state stays in GPU memory, the policy reaches vLLM from the
        trainer's GPUs, and every k rounds weights + state are copied to host memory and uploaded in
        the background (torch.distributed.checkpoint's async_save pattern)."""
        parts = round_parts(c, s3_down=0, s3_up=0, tasks_per_round=tasks, engine_start=False,
                            snapshot=(w + st) / k, **kw)
        parts["checkpoint_save"] += background_excess(c, parts, (w + st) / k)
        return parts

    return {
        # as it stood: all rounds unrolled into one run; rollout, score and train each download the
        # weights (score only needed the tokenizer), train the state too; train uploads both
        "today": summarize(round_parts(c, s3_down=3 * w + st, s3_up=w + st, tasks_per_round=3),
                           runs=1, fits_etcd=False, note="307 tasks in one run: over etcd's limit"),
        # item 0 alone: runs of k rounds
        "bounded_runs": summarize(round_parts(c, s3_down=3 * w + st, s3_up=w + st, tasks_per_round=3, **seg),
                                  **runs),
        # implemented before the serving TrainJob: bounded runs + scoring fetches the tokenizer only
        "bounded_runs_light_scoring": summarize(
            round_parts(c, s3_down=2 * w + st, s3_up=w + st, tasks_per_round=3, **seg),
            **runs, note="bounded runs + tokenizer-only scoring (implemented; resources.train_service: false)"),
        # implemented: the above + a serving TrainJob per branch and run (resources.train_service: true,
        # train_state: run): the ranks keep the DeepSpeed engine between rounds and fetch no weights or state;
        # on one node rank 0 hands the model to the next steps and uploads it in the background (on several,
        # before the step ends), and at a run's last round the state is written to the node's disk, then
        # uploaded in the background
        "train_service_multinode": summarize(train_service_parts(c, w, st, k, seg, handover=False), **runs,
                                             note="serving TrainJob of several nodes: no hand-over, state uploaded before the step "
                                                  "ends (implemented; one node's share of the bytes)"),
        "train_service_per_run_one_stream": summarize(
            train_service_parts(c, w, st, k, seg, streams=False, across_runs=False), **runs,
            note="the serving TrainJob as first built (2026-12-03): one job per run, whose stop waits for the "
                 "run's last model and state to reach S3; one unsharded file, one hand-over stream, one hashing core"),
        "train_service_per_run": summarize(train_service_parts(c, w, st, k, seg, across_runs=False), **runs,
                                           note="the same with 8 streams and 8 hashing workers"),
        "train_service_state_every_run": summarize(
            train_service_parts(c, w, st, k, seg, loader="fast", prestart=True), **runs,
            note="one serving TrainJob per branch across the runs, 8 streams, the state uploaded every run"),
        "chosen_every_2_runs": summarize(
            train_service_parts(c, w, st, k, seg, state_every=2, loader=loader, prestart=True), **runs,
            note="chosen, with the state uploaded every 2 runs (the paper preset's value until 2026-12-04's night)"),
        "chosen_default_loader": summarize(
            train_service_parts(c, w, st, k, seg, state_every=every, prestart=True), **runs,
            note="chosen, with vLLM's default safetensors loader in the rollout pods (rollout.load_format: auto)"),
        "chosen": summarize(train_service_parts(c, w, st, k, seg, state_every=every, loader=loader, prestart=True),
                            **runs,
                            note="bounded runs + tokenizer-only scoring + one serving TrainJob per branch across "
                                 "the runs, with the model's hand-over in 2 GB shards on 8 streams, hashed 8 at a "
                                 f"time, the state uploaded every {every} runs (resources.state_every_runs), "
                                 f"the rollout pods' vLLM reading it with rollout.load_format {cfg.rollout.load_format} "
                                 "and importing itself while it is handed over (implemented, one node)"),
        # not implemented: weights and state handed on through a shared volume (train writes, rollout and
        # train read in place), one S3 copy per run of k rounds for durability
        "local_handoff": summarize(round_parts(c, s3_down=0, s3_up=(w + st) / k, tasks_per_round=3, vol_read=2 * w + st,
                                               vol_write=w + st, **seg),
                                   **runs, note="a shared volume at this box's disk speed (not implemented)"),
        # not implemented: engines that stay up across rounds (one long-lived rollout and train pod)
        "persistent_engines": summarize(kept_up(0), **runs, note="loses per-round visible steps: rejected"),
        # proposed, built only locally (masa.engines.service, masa.train.service): the same long-lived
        # engines, driven by per-round rollout, score and train tasks that stay visible in the DAG (thin
        # CPU pods sending requests to them)
        "engine_services": summarize(kept_up(3, **seg), **runs,
                                     note="persistent engines behind visible steps (proposed; the vLLM and trainer halves are built for masa run only, the state still published every round; no cluster pods)"),
        # the same, but the S3 copy every k rounds waited for: why the copy must run in the background
        "engine_services_sync_copy": summarize(
            round_parts(c, s3_down=0, s3_up=(w + st) / k, tasks_per_round=3, engine_start=False, **seg),
            **runs, note="engine services with a blocking S3 copy every run"),
    }


def makespan_s(c: dict[str, Const], lanes: int, MBps: float) -> float:
    """Seconds to move the model's shards on `lanes` side by side at `MBps` each, dealt out as the
    hand-over deals them (masa.train.handover.plan: largest first, to the lightest lane)."""
    from masa.storage import FileEntry, Manifest
    from masa.train.handover import plan

    w, shard = weights_bytes(c), c["shard_GB"].value * GB
    sizes = [shard] * int(w // shard) + ([w % shard] if w % shard else [])
    m = Manifest(files={f"model-{i:05d}.safetensors": FileEntry(size=int(n), sha256="") for i, n in enumerate(sizes)},
                 created_at="", meta={})
    return max(sum(m.files[r].size for r in part) for part in plan(m, False, lanes)) / (MBps * 1e6)


def train_service_parts(c: dict[str, Const], w: float, st: float, k: int, seg: dict, *,
                        handover: bool = True, streams: bool = True, across_runs: bool = True,
                        state_every: int = 1, loader: str = "default", prestart: bool = False) -> dict[str, float]:
    """The serving TrainJob as built (one node): rank 0 names the model by its manifest (sha256 of the
    weights, `hash_workers` shards at a time), hands it to the next rollout pod over the network
    (`handover_streams` streams, each at the one-stream loopback rate measured here, up to the NIC) and
    uploads it in the background; every k rounds the state is saved into the memory-backed /dev/shm
    (each rank its partition) and uploaded in the background too; vLLM still starts in each rollout
    pod, DeepSpeed once a training. With `across_runs` (as built) the job outlives each bounded run: the
    next run's steps take its model over and continue from its engine, and the state's upload stays
    in the background; without it (as first built) a run's last round stops the job, which first waits
    for that round's model and the run's state to be in S3 (on the round's path, once a run). Without
    `streams`: one stream and one hashing core (as first built). `state_every` (runs): the state is
    saved and uploaded once every that many runs of k rounds (`resources.state_every_runs`). `loader`:
    how each rollout pod's vLLM reads the weights it received (`round_parts`). `prestart`: the pod's
    engine replicas import vLLM while the model is handed over (`make_engine(..., fetch=...)`), so
    that much of their start hides behind the hand-over.
    Without `handover` (several nodes, counted here at one node's share of the bytes): the model goes
    up before the step ends and down from S3, and the state saved every k rounds is uploaded before
    the step ends too (a collective over the nodes)."""
    v = {key: x.value for key, x in c.items()}
    period = k * state_every  # rounds between two states in the store
    save_state = st / period / (v["state_save_shm_MBps"] * 1e6 * v["state_writers"])
    if not handover:
        parts = round_parts(c, s3_down=w, s3_up=w + st / period, tasks_per_round=3, trainer_start=False,
                            loader=loader, **seg)
        parts["checkpoint_save"] += save_state
        return parts
    parts = round_parts(c, s3_down=0, s3_up=0, tasks_per_round=3, trainer_start=False, loader=loader, **seg)
    if not across_runs:  # a run's last train step stops the job, and the stop waits for the uploads of
        # that round's model and the run's state (the next run's resume step needs them complete)
        parts["checkpoint_save"] += (w + st) / (v["s3_up_MBps"] * 1e6) / period
    if streams:
        nic_s = w / (v["nic_Gbps"] * 1e9 / 8)
        parts["checkpoint_load"] += max(makespan_s(c, int(v["handover_streams"]), v["handover_MBps"]), nic_s)
        parts["checkpoint_save"] += makespan_s(c, int(v["hash_workers"]), v["sha256_MBps"]) + save_state
    else:
        parts["checkpoint_load"] += w / (v["handover_MBps"] * 1e6)
        parts["checkpoint_save"] += w / (v["sha256_MBps"] * 1e6) + save_state
    if prestart:
        parts["engine_start"] -= min(v["vllm_import_s"], parts["checkpoint_load"])
    parts["checkpoint_save"] += background_excess(c, parts, w + st / period)
    return parts


def _bisect(share, target: float) -> float | None:
    """The rate in [1, 1e5] at which `share(rate)`, falling as the rate grows, reaches `target`; None
    when it stays above it even at 1e5."""
    lo, hi = 1.0, 1e5
    if share(hi) > target:
        return None
    for _ in range(40):  # geometric: ~1e-11 relative at the end
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if share(mid) > target else (lo, mid)
    return hi


def breakeven(name: str, design: str = "chosen", target: float = 0.15, s3: float | None = None) -> float | None:
    """The value of the rate constant `name` (a faster one lowers the overhead) at which `design` reaches
    `target` overhead share; None: not at any value up to 1e5."""
    def share(x: float) -> float:
        c = constants(s3)
        c[name] = Const(x, "assumed", "what-if")
        return designs(c)[design]["overhead_share"]

    return _bisect(share, target)


# the ends of the workload constants' cited ranges; for the meta response, none (0: no meta path at all, a
# bound below its measured floor) and the released code's cap (8,192); for the MFU, 2 x 8,192 tokens' measured
# 0.392 and 0.3 for 8 ZeRO-3 ranks' collectives taking a share of the step (one GPU measured none)
RANGES = {"mean_response_tokens": (3500, 5500), "inert_share": (0.3, 0.5), "meta_response_tokens": (0, 8192),
          "train_mfu": (0.3, 0.392)}


def chosen_over_ranges(s3: float | None = None) -> dict[str, dict[str, float]]:
    """`chosen`'s overhead share at each end of RANGES, one constant at a time: how far the claim
    rests on a constant that no run here can measure."""
    out = {}
    for name, ends in RANGES.items():
        out[name] = {}
        for x in ends:
            c = constants(s3)
            c[name] = Const(x, "assumed", "what-if")
            out[name][f"{x:g}"] = designs(c)["chosen"]["overhead_share"]
    return out


def scheduling_floor(c: dict[str, Const]) -> dict[str, float]:
    """The overhead share of a round whose only overhead were `chosen`'s pipeline scheduling (a driver
    and an executor pod per KFP task, three visible tasks a round): what no design that keeps those
    steps can go under, at the pods per task KFP 2.x runs (2) and at one (the driver in the executor
    pod's init container: kubeflow/pipelines#13258, a draft; or a driver agent per workflow, #12269)."""
    out = {}
    for pods in (c["pods_per_task"].value, 1):
        c2 = dict(c, pods_per_task=Const(pods, "assumed", "what-if"))
        p = designs(c2)["chosen"]["parts_s"]
        useful = sum(p[k] for k in USEFUL)
        out[f"{pods:g}_pods_per_task"] = p["pipeline_scheduling"] / (useful + p["pipeline_scheduling"])
    return out


def breakeven_s3(design: str = "chosen", target: float = 0.15) -> float | None:
    """The S3 throughput (MB/s, up and down) at which `design` reaches `target` overhead share
    (None: not at any S3 speed, e.g. when the design's volume transfers alone exceed it)."""
    return _bisect(lambda x: designs(constants(x))[design]["overhead_share"], target)


def size_model(c: dict[str, Const]) -> dict:
    """IR bytes per task measured from our compiled YAML; Workflow bytes per task cited."""
    from masa.config import load_config
    from masa.pipeline.compile import compile_pipeline

    cfg = load_config("paper")
    with tempfile.TemporaryDirectory() as d:
        worst = max(range(len(cfg.segments)), key=lambda i: len(cfg.segments[i]) + (i > 0) + (i == len(cfg.segments) - 1))
        path = compile_pipeline(cfg, Path(d) / "p.yaml", worst)
        import yaml

        spec = next(yaml.safe_load_all(path.read_text()))
        tasks = sum(len(x["dag"].get("tasks", {})) for x in [spec["root"], *spec["components"].values()] if "dag" in x)
        ir = path.stat().st_size
    per_task = c["workflow_bytes_per_task"].value
    return {"tasks_per_run": tasks, "ir_bytes": ir, "ir_bytes_per_task": ir / tasks,
            "workflow_bytes_est": tasks * per_task, "etcd_limit_bytes": c["etcd_limit_bytes"].value,
            "max_tasks_by_etcd": int(c["etcd_limit_bytes"].value // per_task),
            "today_tasks": 307, "today_workflow_bytes_est": 307 * per_task}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--s3-MBps", type=float, default=None, help="what-if S3 throughput (MB/s)")
    args = ap.parse_args()
    c = constants(args.s3_MBps)
    out = {**designs(c), "size": size_model(c),
           "s3_MBps_for_15pct": {d: breakeven_s3(d) for d in ("today", "bounded_runs_light_scoring",
                                                            "train_service_per_run", "chosen", "local_handoff",
                                                            "engine_services_sync_copy")},
           "chosen_at_15pct": {k: breakeven(k, s3=args.s3_MBps)
                                    for k in ("handover_MBps", "sha256_MBps", "nic_Gbps", "s3_up_MBps")},
           "chosen_over_ranges": chosen_over_ranges(args.s3_MBps),
           "scheduling_floor": scheduling_floor(c),
           "constants": {k: {"value": x.value, "kind": x.kind, "source": x.source} for k, x in c.items()}}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    names = [k for k in out if k not in ("size", "constants", "s3_MBps_for_15pct", "chosen_at_15pct",
                                         "chosen_over_ranges", "scheduling_floor")]
    parts = list(out["today"]["parts_s"])
    print("seconds per paper-scale round and branch (bench/paper_cost_model.py)\n")
    cols = [(n, max(10, len(n) + 2)) for n in names]
    print(f"{'part':<22}" + "".join(f"{n:>{w}}" for n, w in cols))
    for p in parts:
        print(f"{p:<22}" + "".join(f"{out[n]['parts_s'][p]:>{w}.0f}" for n, w in cols))
    print(f"{'round':<22}" + "".join(f"{out[n]['round_s']:>{w}.0f}" for n, w in cols))
    print(f"{'overhead share':<22}" + "".join(f"{out[n]['overhead_share']:>{w}.1%}" for n, w in cols))
    s = out["size"]
    print(f"\nsize: today {s['today_tasks']} tasks ~ {s['today_workflow_bytes_est'] / MIB:.1f} MiB of Workflow; "
          f"now <= {s['tasks_per_run']} tasks per run, IR {s['ir_bytes'] / 1024:.0f} KiB "
          f"({s['ir_bytes_per_task'] / 1024:.1f} KiB/task), Workflow ~ {s['workflow_bytes_est'] / MIB:.2f} MiB "
          f"of etcd's {s['etcd_limit_bytes'] / MIB:.1f} MiB (max ~{s['max_tasks_by_etcd']} tasks)")
    print("\nS3 throughput (MB/s, each way) at which the overhead share is 15%: "
          + ", ".join(f"{d} {v:.0f}" if v else f"{d} never" for d, v in out["s3_MBps_for_15pct"].items()))
    print("chosen at 15%, one constant at a time: "
          + ", ".join(f"{k} {v:.0f} (now {c[k].value:.0f})" if v else f"{k} never"
                      for k, v in out["chosen_at_15pct"].items()))
    print("chosen at the ends of the workload constants' ranges, one at a time: "
          + "; ".join(f"{k} " + ", ".join(f"{x} -> {v:.1%}" for x, v in r.items())
                      for k, r in out["chosen_over_ranges"].items()))
    print("the floor of KFP's pods (a round whose only overhead were chosen's pipeline scheduling): "
          + ", ".join(f"{v:.1%} at {k.split('_')[0]} pod(s) per task" for k, v in out["scheduling_floor"].items()))
    print("\nconstants:")
    for k, x in c.items():
        print(f"  {k:<26}{x.value:>14.4g}  {x.kind:<9}{x.source}")


if __name__ == "__main__":
    main()
