"""One rank of the distributed training step: `python -m masa.train.worker SPEC`, started by
masa.train.launch, torchrun, the `deepspeed` launcher, or a Kubeflow Trainer TrainJob (any launcher that sets RANK/WORLD_SIZE/...).
SPEC is a JSON file or inline JSON: local paths (from `train_round`) or a request with URIs and
`"remote": true` (from a TrainJob, see masa.train.remote).

The same code runs on 2 CPU processes over gloo and on many GPUs over NCCL. Equivalence with 1 rank
holds because (a) the plan (`masa.train.data.plan_round`) gives each rank a disjoint share of every step
and the same global denominators, (b) each micro-batch's loss is its share of the full-batch loss, and
(c) we undo DeepSpeed's averaging: `engine.backward(loss * world, scale_wrt_gas=False)` with
`managed_gradient_accumulation: false` (the step boundary is ours, whatever the micro-batch count),
so the reduced gradient is the SUM of the shares = the full-batch gradient.

From `train_round` the spec names local paths: the launching process staged the inputs and publishes
the outputs. Resume points are published by the workers while training runs (every node uploads its
ranks' files, rank 0 writes the manifest: `checkpoint.publish_sharded`). From a TrainJob the workers
also stage and publish the round themselves (masa.train.remote).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from masa.algo.experts import phase_lr
from masa.train import checkpoint as ckpt
from masa.train import phase
from masa.train.config import TrainConfig
from masa.train.data import (
    EXPERT,
    StepPlan,
    TrainSample,
    load_expert_samples,
    load_policy_samples,
    plan_round,
)
from masa.train.metrics import StepAccumulator
from masa.train.objective import Denominators, MicroBatch, collate, microbatch_loss, sequence_logprobs
from masa.train.remote import publish_round, stage_on_nodes
from masa.train.spec import METRICS_PREFIX, ROUND_DONE, RoundRequest, WorkerSpec, worker_input

# `optimizer_step(ref=OLD_LOGP)`: the KL term's reference log-probs are the samples' recorded old_logp
# (the expert phase's anchor, masa.train.phase) rather than a reference model's forward pass
OLD_LOGP = object()
FAULT_ENV = "MASA_TRAIN_FAULT"  # test hook: "rank=R,step=S,micro=M" -> SIGKILL self after that backward


def _fault(rank: int) -> tuple[int, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kv = dict(item.split("=") for item in spec.split(","))
    return (int(kv["step"]), int(kv.get("micro", 0))) if int(kv["rank"]) == rank else None


def _device_and_dtype(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
        return dev, torch.float32 if cfg.dtype == "float32" else torch.bfloat16
    return torch.device("cpu"), torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32


def _ds_config(path: str, cfg: TrainConfig, dtype: torch.dtype) -> dict:
    ds = json.loads(Path(path).read_text())
    ds["gradient_clipping"] = cfg.grad_clip
    ds["bf16"] = {"enabled": dtype == torch.bfloat16}
    ds["zero_optimization"]["stage"] = cfg.zero_stage
    ds["train_micro_batch_size_per_gpu"] = 1
    ds["gradient_accumulation_steps"] = 1
    ds["managed_gradient_accumulation"] = False
    return ds


def build_engine(model_dir: str, cfg: TrainConfig, ds_config_path: str, device, dtype):
    import deepspeed
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    if cfg.gradient_checkpointing if cfg.gradient_checkpointing is not None else device.type == "cuda":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay)
    warm = cfg.warmup_steps
    # linear warm-up over the first `warm` optimizer steps of the whole run (the step count survives
    # rounds through the saved scheduler state), then constant, as in the paper
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                           config=_ds_config(ds_config_path, cfg, dtype))
    return engine


def load_reference(path: str, device, dtype):
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def recompute_old_logprobs(engine, samples: list[TrainSample], plans: list[StepPlan], rank: int, pad_id: int,
                           device, temperature: float) -> tuple[list[TrainSample], float, int]:
    """Replace this rank's policy samples' old log-probs with the training model's (before any update).

    Returns (samples, sum of |rollout - recomputed| over tokens, token count) for the gap metric.
    """
    samples = list(samples)
    gap, n = 0.0, 0
    with torch.no_grad():
        for plan in plans:
            for idx in plan.micro[rank]:
                idx = [i for i in idx if samples[i].path != EXPERT]
                if not idx:
                    continue
                mb = collate([samples[i] for i in idx], pad_id).to(device)
                logp, _ = sequence_logprobs(engine, mb, temperature=temperature)
                gap += float((logp - mb.old_logp).abs()[mb.mask].sum())
                n += int(mb.mask.sum())
                for row, i in enumerate(idx):
                    new = logp[row][mb.mask[row]].float().cpu().tolist()
                    samples[i] = dataclasses.replace(samples[i], old_logp=tuple(new))
    return samples, gap, n


def optimizer_step(engine, ref, plan: StepPlan, samples: list[TrainSample], cfg: TrainConfig, *, rank: int,
               world: int, pad_id: int, device, fault_micro: int | None) -> StepAccumulator:
    """Forward/backward every micro-batch of this rank, then one optimizer step."""
    den = Denominators(plan.policy_tokens, plan.policy_seqs, plan.expert_tokens, plan.expert_seqs)
    acc = StepAccumulator()
    for j, idx in enumerate(plan.micro[rank]):
        mb: MicroBatch = collate([samples[i] for i in idx], pad_id)
        n_tokens = mb.n_tokens if idx else 0  # padding batches count nothing; counted before the copy
        mb = mb.to(device)
        logp, ent = sequence_logprobs(engine, mb, entropy="grad" if cfg.entropy_coef > 0 else "stats",
                                      temperature=cfg.temperature)
        ref_logp = None
        if ref is OLD_LOGP:  # the expert phase's anchor: its reference is recorded in old_logp
            ref_logp = mb.old_logp
        elif ref is not None:
            with torch.no_grad():
                ref_logp, _ = sequence_logprobs(ref, mb, temperature=cfg.temperature)
        loss, stats = microbatch_loss(
            logp, mb, den, clip_low=cfg.clip_low, clip_high=cfg.clip_high, dual_clip=cfg.dual_clip,
            agg=cfg.loss_agg, bc_coef=cfg.bc_coef, kl_coef=cfg.kl_coef, entropy_coef=cfg.entropy_coef,
            ref_logp=ref_logp, entropy=ent)
        # DeepSpeed averages gradients over ranks; our loss is already a share of the global mean
        engine.backward(loss * world, scale_wrt_gas=False)
        acc.add(stats, loss=loss.detach(), tokens=n_tokens)
        if acc.first_gap is None:
            pol = mb.mask & ~mb.rows(EXPERT)[:, None]
            acc.first_gap = (torch.where(pol, (logp.detach() - mb.old_logp).abs(), 0.0).sum(), pol.sum())
        if fault_micro is not None and j == fault_micro:
            os.kill(os.getpid(), signal.SIGKILL)  # test hook: die mid-step, like a lost node
    acc.lr = engine.get_lr()[0]
    engine.step()
    acc.grad_norm = engine.get_global_grad_norm()
    return acc


def run_phases(engine, batches: list[list[TrainSample]], cfg: TrainConfig, *, rank: int, world: int, pad_id: int,
               device, global_step: int, first: int, out: Path, solutions: list[TrainSample],
               moments: list[dict] | None = None) -> list[dict] | None:
    """Clone each full batch of the expert buffer: `bc_phase_steps` steps over the whole batch at the
    phase's LR (masa.train.phase). Each step's metrics row has "phase": "expert"; `step` stays the
    policy's global step (the policy LR schedule does not count these steps). With `bc_phase_anchor`,
    each batch also anchors as many of `solutions` to the policy as its steps find it. With
    `bc_phase_moments: own` the steps use the phase's AdamW state `moments` (None: fresh); returns the
    state to carry to the next phase (`moments` unchanged when there was nothing to clone)."""
    # the phase's own LR scales the BC, not bc_coef; the anchor is the policy loss's KL term
    bc_cfg = dataclasses.replace(cfg, bc_coef=1.0, kl_coef=cfg.bc_phase_anchor)
    anchored = cfg.bc_phase_anchor > 0
    k = first
    own = cfg.bc_phase_moments == "own" and batches
    with phase.own_moments(engine, moments) if own else contextlib.nullcontext(moments) as kept, \
            phase.own_lr(engine):
        for b, batch in enumerate(batches):
            if anchored:
                batch = phase.anchor_rows(solutions, len(batch), seed=cfg.seed * 7919 + b) + batch
            plan = plan_round(batch, world=world, steps=1, samples_per_step=None, seed=cfg.seed,
                              token_budget=cfg.max_tokens_per_microbatch)[0]
            if anchored:  # the reference: these rows' log-probs before this batch's first step
                batch, _, _ = recompute_old_logprobs(engine, batch, [plan], rank, pad_id, device, cfg.temperature)
            for s in range(cfg.bc_phase_steps):
                for g in engine.optimizer.param_groups:
                    g["lr"] = phase_lr(s, steps=cfg.bc_phase_steps, lr=cfg.bc_phase_lr)
                t0 = time.perf_counter()
                acc = optimizer_step(engine, OLD_LOGP if anchored else None, plan, batch, bc_cfg, rank=rank,
                                     world=world, pad_id=pad_id, device=device, fault_micro=None)
                k += 1
                row = {**acc.reduce(step=global_step, step_in_round=k, seconds=time.perf_counter() - t0,
                                    gap=None, device=device), "phase": "expert"}
                if rank == 0:
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(METRICS_PREFIX + json.dumps(row), flush=True)
    return kept


def restore(engine, spec: WorkerSpec, world: int) -> tuple[int, int, str]:
    """Load this round's resume point, else the previous round's state; (start step, global step, what).

    A resume point must carry this round's fingerprint. ZeRO partitions depend on the world size: when it
    changed since the state was saved, the weights stay those of the HF checkpoint, AdamW moments
    restart, and only the step count (hence the LR schedule) carries over.
    """
    for key in ("resume_dir", "init_state_dir"):  # a resume point of this round wins over last round's
        sdir = getattr(spec, key)
        st = ckpt.read_train_state(Path(sdir)) if sdir else None
        if st is None:
            continue
        if key == "resume_dir" and st["fingerprint"] != spec.fingerprint:
            raise RuntimeError(f"resume point {sdir} belongs to another round's inputs; refusing it")
        step = st["global_step"]
        if st["world"] == world:
            ckpt.load_state(engine, Path(sdir), with_optimizer=True)
            what = f"{key}:{step}"
        else:
            engine.lr_scheduler.last_epoch = step - 1
            engine.lr_scheduler.step()  # lr of step `step`, as after `step` optimizer steps
            what = f"{key}:{step} (world {st['world']} -> {world}: optimizer moments reset)"
        return (st["step_in_round"] if key == "resume_dir" else 0), step, what
    return 0, 0, "none"


def run_policy_steps(engine, ref, plans: list[StepPlan], samples: list[TrainSample], spec: WorkerSpec, *,
                     start: int, global_step: int, gap0, restored: str, rank: int, world: int, pad_id: int,
                     device, out: Path) -> int:
    """The round's policy optimizer steps from `start`: a metrics row each (rank 0 writes it), and a
    resume point every `save_every` steps where the spec names a resume root. Returns the global step."""
    cfg, work, fault = spec.cfg, Path(spec.work_dir), _fault(rank)
    for k in range(start, len(plans)):
        t0 = time.perf_counter()
        acc = optimizer_step(engine, ref, plans[k], samples, cfg, rank=rank, world=world, pad_id=pad_id,
                             device=device, fault_micro=fault[1] if fault and fault[0] == k else None)
        global_step += 1
        row = acc.reduce(step=global_step, step_in_round=k + 1, seconds=time.perf_counter() - t0,
                         gap=gap0 if gap0 is not None else (acc.first_gap if k == start else None),
                         device=device)
        row["restored_from"] = restored
        row["skipped_samples"] = plans[k].skipped
        if rank == 0:
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(METRICS_PREFIX + json.dumps(row), flush=True)
        done = k + 1
        if cfg.save_every and done % cfg.save_every == 0 and done < len(plans) and spec.resume_root:
            sdir = work / "resume" / ckpt.step_prefix(global_step)
            ckpt.save_state(engine, sdir, {"global_step": global_step, "step_in_round": done, "world": world,
                                           "fingerprint": spec.fingerprint})
            ckpt.publish_sharded(sdir, spec.resume_root.rstrip("/") + "/" + ckpt.step_prefix(global_step))
    return global_step


@dataclasses.dataclass
class Held:
    """What a rank of the trainer service keeps between rounds (masa.train.service): the DeepSpeed
    engine as the round left it (weights, AdamW moments, LR schedule), its global step and the expert
    phase's buffer, so the next round need not rebuild it from the published checkpoint and state."""

    engine: object
    global_step: int
    buffer: list | None = None
    moments: list | None = None  # the expert phase's own AdamW state (`bc_phase_moments: own`)


def _backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_distributed() -> tuple[int, int]:
    import deepspeed

    # On CPU DeepSpeed JIT-compiles a shared-memory all-reduce at init (~150 s on a fresh machine, and
    # a C++ toolchain in the image) that only its *inference* all-reduce uses; training collectives
    # go through torch.distributed (gloo). Mark the op unavailable so it is never built.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend=_backend())
    return dist.get_rank(), dist.get_world_size()


def train(spec: WorkerSpec, *, rank: int, world: int, held: Held | None = None) -> Held:
    """One round on this rank: from `held` (the trainer service's engine, which holds exactly the state
    the round starts from) or else from the staged checkpoint and state; saves the model and state
    into the work dir. Returns what a service keeps for the next round."""
    cfg = spec.cfg
    device, dtype = _device_and_dtype(cfg)
    torch.manual_seed(cfg.seed)
    work = Path(spec.work_dir)

    experts = load_expert_samples(spec.experts_path)
    phased = cfg.bc_mode == "phase"  # experts go to the phase's buffer, not into the policy steps
    samples = load_policy_samples(spec.scored_path) + ([] if phased else experts)
    plans = plan_round(samples, world=world, steps=cfg.steps_per_round, samples_per_step=cfg.samples_per_step,
                       epochs=cfg.epochs, token_budget=cfg.max_tokens_per_microbatch, seed=cfg.seed,
                       skip_inert=cfg.skips_inert)
    if held is not None:
        engine, (start, global_step, restored) = held.engine, (0, held.global_step, f"service:{held.global_step}")
    else:
        engine = build_engine(spec.model_dir, cfg, spec.ds_config, device, dtype)
        start, global_step, restored = restore(engine, spec, world)
    pad_id = engine.module.config.pad_token_id or 0
    ref = load_reference(spec.ref_model_dir, device, dtype) if cfg.kl_coef > 0 else None

    gap0 = None
    if cfg.recompute_logprobs:
        samples, g, n = recompute_old_logprobs(engine, samples, plans, rank, pad_id, device,
                                                 cfg.temperature)
        gap0 = (torch.tensor(g), torch.tensor(float(n)))

    metrics_path = work / "metrics.jsonl"
    global_step = run_policy_steps(engine, ref, plans, samples, spec, start=start, global_step=global_step,
                                   gap0=gap0, restored=restored, rank=rank, world=world, pad_id=pad_id,
                                   device=device, out=metrics_path)
    left = moments = None
    if phased:
        buffer = held.buffer if held is not None else phase.load_buffer(spec.init_state_dir)
        if cfg.bc_phase_moments == "own":
            moments = held.moments if held is not None else phase.load_moments(spec.init_state_dir, rank)
        batches, left = phase.fill(buffer, experts, batch=cfg.bc_phase_batch)
        moments = run_phases(engine, batches, cfg, rank=rank, world=world, pad_id=pad_id, device=device,
                             global_step=global_step, first=len(plans), out=metrics_path, solutions=samples,
                             moments=moments)
    out = work / "out"
    ckpt.save_hf(engine, cfg.zero_stage, Path(spec.model_dir), out)
    info = {"global_step": global_step, "step_in_round": len(plans), "world": world,
            "fingerprint": spec.fingerprint, **({"expert_buffer": len(left)} if phased else {})}
    if spec.save_state:
        ckpt.save_state(engine, work / "state", info)
        if phased and rank == 0:
            phase.save_buffer(left, work / "state")
        phase.save_moments(moments, work / "state", rank)
    elif rank == 0:  # the trainer service keeps the state: only the step count is written
        (work / "state").mkdir(parents=True, exist_ok=True)
        (work / "state" / ckpt.STATE_FILE).write_text(json.dumps(info, indent=1))
    if spec.publish_to:  # workers started on their own nodes publish themselves (TrainJob)
        publish_round(work, spec.publish_to)
    dist.barrier()
    return Held(engine, global_step, left, moments)


def run(spec: WorkerSpec | RoundRequest) -> None:
    rank, world = init_distributed()
    if isinstance(spec, RoundRequest):  # started by a TrainJob: URIs, each node stages its copy
        spec = stage_on_nodes(spec)
    train(spec, rank=rank, world=world)
    dist.destroy_process_group()


def serve(commands) -> int:
    """A rank of the trainer service: one JSON line per round on `commands` ({"spec": path, "use_held":
    bool}), the round trained, then `ROUND_DONE`; the engine stays with the rank between rounds. Any
    error ends the rank (the service then ends: the next round starts afresh from the store)."""
    parent = os.getppid()

    def orphaned() -> None:  # the service is gone (even killed): so is this rank
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True).start()
    rank, world = init_distributed()
    held: Held | None = None
    for line in commands:
        msg = json.loads(line)
        os.chdir(msg["cwd"])  # the step's directory, which its paths may be relative to
        spec = worker_input(json.loads(Path(msg["spec"]).read_text()))
        if not msg["use_held"]:
            held = None  # the service holds another state than this round starts from: built afresh
        held = train(spec, rank=rank, world=world, held=held)
        print(ROUND_DONE, flush=True)
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--serve"]:  # a rank of the trainer service: rounds come on stdin
        return serve(sys.stdin)
    if len(argv) != 1:
        print("usage: python -m masa.train.worker SPEC.json|'{...inline JSON...}'", file=sys.stderr)
        return 2
    # inline JSON: how a TrainJob passes its request (container args), no file to ship to the nodes
    run(worker_input(json.loads(argv[0] if argv[0].lstrip().startswith("{") else Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
