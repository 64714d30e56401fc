"""The constants of bench/paper_cost_model.py, each labelled MEASURED (with the command that measured
it: here, or on the one H200 lent) or CITED (with its source); ASSUMED marks only the cost model's
what-ifs. Read from bench/results/*.json where a bench wrote them, so that a rerun of the bench
changes the model without an edit here."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIB = 1 << 20


@dataclass(frozen=True)
class Const:
    value: float
    kind: str  # measured | cited | assumed
    source: str


GPU_RUN = "bench/results/gpu_train_8b_b2_s4096_h200_2026-12-04.json"


def gpu_constants() -> dict[str, Const]:
    """Training throughput of the paper's model shape, measured on the one H200 lent (2026-12-04).
    One GPU, no ZeRO: the 8 ranks' all-gathers and reduce-scatters can only slow a step, so this is
    the fast end of training, the end that makes the overhead share larger. 2 x 4,096 tokens is the
    measured setting nearest the paper's mean sequence (~4,600 tokens); RANGES holds 2 x 8,192's."""
    g = json.loads((ROOT / GPU_RUN).read_text())
    cmd = f"bash bench/gpu_mfu_8b.sh on one H200 (2026-12-04, torch {g['torch']}): {GPU_RUN}"
    return {
        "train_mfu": Const(round(g["mfu"], 4), "measured", f"Qwen3-8B-Base shape, all 36 layers, random init, "
                           f"bf16, {g['batch']} x {g['seq']} tokens per step, gradient checkpointing: {cmd}"),
        # the FLOPs that MFU counts (bench/gpu_train_mfu.py): the embedding lookup is no matmul
        "flop_params": Const(g["non_embedding_params"] + 4096 * 151936, "measured",
                             f"non-embedding parameters + the LM head (hidden 4,096 x vocab 151,936), the "
                             f"parameters whose matmuls MFU counts, of the same model: {cmd}"),
    }


def constants(s3_override: float | None = None) -> dict[str, Const]:
    m = json.loads((ROOT / "bench" / "results" / "cost_constants_cpu.json").read_text())
    cmd = m["command"]
    s3 = max(m["s3_seaweedfs_loopback"].values(), key=lambda r: r["up_MBps"] + r["down_MBps"])
    best = [k for k, r in m["s3_seaweedfs_loopback"].items() if r is s3][0]
    c = {
        # --- measured here (2-core box, no GPU): floors for a cluster
        "s3_up_MBps": Const(s3["up_MBps"], "measured", f"SeaweedFS loopback, best part size ({best}): {cmd}"),
        "s3_down_MBps": Const(s3["down_MBps"], "measured", f"same run, verified download: {cmd}"),
        "ckpt_bytes_per_param": Const(m["checkpoint_bytes_per_param_bf16"], "measured",
                                      f"consolidated bf16 safetensors / parameters: {cmd}"),
        "state_bytes_per_param": Const(m["train_state_bytes_per_param_zero3_bf16"], "measured",
                                       "resumable ZeRO-3 bf16 state (fp32 master weights + AdamW's two fp32 "
                                       f"moments) / parameters, after one step; ZeRO's K = 12: {cmd}"),
        "vllm_start_s": Const(m["vllm_startup_s_cpu_tiny"], "measured",
                              f"vLLM CPU engine start, tiny model (framework floor, weights excluded): {cmd}"),
        "deepspeed_start_s": Const(m["deepspeed_zero3_startup_s_cpu_tiny"], "measured",
                                   f"imports + deepspeed.initialize ZeRO-3, 1 gloo rank, tiny model: {cmd}"),
        "vol_write_MBps": Const(236, "measured", "docs/storage.md: bench/bench_storage.py --reps 5, local-dir "
                                "store, masa upload (sha256 + fsync + manifest), this box's disk"),
        "vol_read_MBps": Const(303, "measured", "docs/storage.md: same run, verified local-dir download"),
        "verify_per_s": Const(9234.0, "measured", "docs/verifier.md: verify_batch, 2 workers, bench/bench_verifier.py"),
        # --- cited
        "params": Const(8.2e9, "cited", "Qwen/Qwen3-8B-Base model card: 8.2B parameters"),
        "layers": Const(36, "cited", "Qwen/Qwen3-8B-Base config.json: num_hidden_layers"),
        "kv_heads": Const(8, "cited", "Qwen/Qwen3-8B-Base config.json: num_key_value_heads (head_dim 128)"),
        "attn_width": Const(32 * 128, "cited", "Qwen/Qwen3-8B-Base config.json: 32 heads x head_dim 128"),
        "hbm_TBps": Const(4.8, "cited", "NVIDIA H200 datasheet: 4.8 TB/s HBM3e"),
        "gpu_mem_GB": Const(141, "cited", "NVIDIA H200 datasheet: 141 GB"),
        "pcie_GBps": Const(64, "cited", "PCI-SIG: PCIe 5.0 x16, 64 GB/s each way (H200 SXM host link)"),
        "peak_bf16": Const(989e12, "cited", "NVIDIA H100/H200 SXM datasheet, dense BF16 (bench/gpu_train_mfu.py)"),
        "pod_start_s": Const(5.0, "cited", "kubernetes/kubernetes#3954: 99th-percentile pod start-up, "
                                           "images pre-pulled, < 5 s (Kubernetes' SLO)"),
        "pods_per_task": Const(2, "cited", "kubeflow/pipelines#13258: KFP v2 runs a driver pod, then the "
                                           "executor pod, per task (a cache hit: the driver only)"),
        "workflow_bytes_per_task": Const(1.95 * MIB / 56, "cited", "kubeflow/pipelines#13738: a flat 56-task "
                                         "pipeline compiled to a 1.95 MiB Workflow (KFP 2.15, Argo 3.7.3)"),
        "etcd_limit_bytes": Const(1.5 * MIB, "cited", "etcd --max-request-bytes default 1.5 MiB "
                                  "(etcd configuration docs; the error of kubeflow/pipelines#13738)"),
        **gpu_constants(),
        # --- the workload (no GPU lent): replace with the report's figures of a real run
        "decode_efficiency": Const(0.74, "cited", "share of the HBM roofline vLLM decode reaches: Llama-3.1-8B "
                                   "fp16 (16.06 GB of weights) on one H100 SXM (3.35 TB/s), vLLM 0.21.0, TPOT p50 "
                                   "6.48 ms at concurrency 1 = 2.48 TB/s (yobitelcomm.github.io/bench, recipes/"
                                   "concurrency-sweep, 2026-05-16); 77% on an A100 with vLLM 0.23.0 (johnmusgrave.com, "
                                   "'vLLM throughput-latency sweep on NVIDIA A100')"),
        "mean_response_tokens": Const(4500, "cited", "DeepScaleR blog (Luo, Tan et al., 2025-02, 'DeepScaleR: "
                                      "Surpassing O1-Preview with a 1.5B Model by Scaling RL'): RL on the DeepScaleR "
                                      "problems at an 8K context, mean response length from 5,500 down to 3,500 "
                                      "tokens; the middle of that range (a distilled 1.5B model, not Qwen3-8B-Base; "
                                      "the report's rollout_tokens / samples gives a run's own)"),
        "inert_share": Const(0.3, "cited", "solution rollouts of zero-variance groups, not computed in training "
                             "(train.skip_inert): 'zero-variance prompts account for roughly 30% to 99% of each "
                             "batch' (RL-ZVP, arXiv 2509.21880, sec. 3.1: Qwen3-8B-Base, 16 samples, 8,192-token "
                             "cap); the low end (more inert samples, less training, a larger overhead share)"),
        # vLLM reading a checkpoint into one GPU, TP 1, A100, from NVMe: Llama-2-13b-hf (13.0B params, 26.0 GB
        # in bf16) in 16.04 s with the default safetensors loader, 6.88 s with fastsafetensors (7b: 7.29 /
        # 3.67 s); vllm-project/vllm#10647, the PR that added the loader; the same figures in
        # arXiv 2505.23072 (IEEE CLOUD 2025)
        "load_default_GBps": Const(26.03 / 16.04, "cited", "vLLM's default safetensors loader: Llama-2-13b-hf "
                                   "(26.0 GB) into one A100 from NVMe in 16.04 s (vllm-project/vllm#10647)"),
        "load_fast_GBps": Const(26.03 / 6.88, "cited", "vLLM's load_format fastsafetensors: the same 26.0 GB in "
                                "6.88 s (vllm-project/vllm#10647; arXiv 2505.23072); rollout.load_format of the "
                                "paper presets"),
        "pcie_efficiency": Const(0.86, "cited", "share of the PCIe rate a host-to-GPU copy reaches: nvbandwidth "
                                 "host_to_device_memcpy_ce 55.3 GB/s per GPU of 64 on 8 x H800 (PCIe 5.0 x16, "
                                 "as the H100/H200 SXM); NVIDIA/nvbandwidth#24 for H100's SM copies"),
    }
    c.update(prompt_constants())
    h = json.loads((ROOT / "bench" / "results" / "handover_cpu.json").read_text())
    c["handover_MBps"] = Const(h["handover_loopback"]["MBps_median"], "measured",
                               f"serving TrainJob's model hand-over over TCP loopback, receiver writes and "
                               f"checks sha256 ({h['date']}): {h['command']}")
    c["state_save_shm_MBps"] = Const(h["torch_save_shm"]["MBps_median"], "measured",
                                     f"one process's torch.save of fp32 tensors into /dev/shm ({h['date']}): "
                                     f"{h['command']}")
    c["state_writers"] = Const(8, "cited", "the paper preset's train_processes: 8 ranks each save their ZeRO "
                               "partition at the one-process rate above, side by side: 8 x that is 2% of a DGX "
                               "H200's host memory bandwidth (2 x Xeon 8480C, 8 channels of DDR5-4800 each: "
                               "614 GB/s; NVIDIA DGX H200 datasheet, Intel's product page)")
    pre = json.loads((ROOT / "bench" / "results" / "prestart_cpu.json").read_text())
    c["vllm_import_s"] = Const(pre["import_s_median"], "measured",
                               f"the part of vLLM's start that needs no checkpoint (importing it), which a "
                               f"rollout pod's replicas do while the policy is handed over ({pre['measured']}; "
                               f"side by side there, fetch-then-start {pre['wall_s_median']['sequential']:.1f} s, "
                               f"overlapped {pre['wall_s_median']['overlapped']:.1f} s): {pre['command']}")
    c["sha256_MBps"] = Const(h["sha256_manifest"]["MBps_median"], "measured",
                             f"local_manifest's sha256, one core ({h['date']}): {h['command']}")
    from masa.storage.artifacts import HASH_WORKERS
    from masa.train.checkpoint import SHARD_SIZE
    from masa.train.handover import STREAMS

    c["shard_GB"] = Const(float(SHARD_SIZE.removesuffix("GB")), "cited", "masa.train.checkpoint.SHARD_SIZE: "
                          "the consolidated model's safetensors shards")
    c["handover_streams"] = Const(STREAMS, "cited", "masa.train.handover.STREAMS side by side, each at the one-"
                                  "stream rate measured here while each has a core on both sides (the pods request "
                                  f"resources.cpu_request, 32); here 2 streams on 2 cores shared by both sides "
                                  f"gave {h['two_streams_over_one']:.2f}x one stream: {h['command']}")
    c["hash_workers"] = Const(HASH_WORKERS, "cited", "masa.storage.artifacts.HASH_WORKERS files hashed side by "
                              "side at the one-core rate measured here (the pods request 32 cores); here 2 workers on 2 cores gave "
                              f"{h['two_hash_workers_over_one']:.2f}x one: {h['command']}")
    c["nic_Gbps"] = Const(80, "cited", "pod (TCP) network of an 8-GPU node: Azure ND H100 v5, 'Max Bandwidth' "
                          "80,000 Mbps over 8 NICs (MicrosoftDocs/azure-docs ndh100v5-series.md; InfiniBand "
                          "apart); Google's A3 Ultra (8 x H200) gives 400 Gb/s to general traffic "
                          "(cloud.google.com gpu-network-bandwidth): the lower")
    if s3_override:
        for k in ("s3_up_MBps", "s3_down_MBps"):
            c[k] = Const(s3_override, "assumed", "--s3-MBps what-if")
    return c


def prompt_constants() -> dict[str, Const]:
    """Prompt tokens of the solution and meta prompts: their characters measured on real problems,
    turned into tokens with a cited ratio, plus the chat template's tokens. And the meta response's
    length at its floor, measured the same way: the overhead share falls as the meta path grows (it is
    generated and trained, useful work; tests/test_cost_model.py), so its shortest parseable form is the
    conservative value, where no run of the paper's setting reports the mean."""
    p = json.loads((ROOT / "bench" / "results" / "prompt_length.json").read_text())
    per_char, template = 0.3, 8  # the two cited figures below
    src = (f"mean characters of the `paper` preset's {{}} prompt over {p['problems']:,} {p['data']} problems, "
           f"{{:.0f}} ({p['measured']}: {p['command']}), x 0.3 tokens per English character (DeepSeek API "
           "docs, 'Token & Token Usage'; no Qwen tokenizer here) + 8 tokens of Qwen3's chat template "
           "(<|im_start|>user\\n ... <|im_end|>\\n<|im_start|>assistant\\n)")
    return {"prompt_tokens": Const(p["solution_chars_mean"] * per_char + template, "measured",
                                   src.format("solution", p["solution_chars_mean"])),
            "meta_prompt_tokens": Const(p["meta_chars_mean"] * per_char + template, "measured",
                                        src.format("meta", p["meta_chars_mean"])),
            "meta_response_tokens": Const(
                p["meta_floor_response_chars_mean"] * per_char + 1, "measured",
                f"the meta response's floor: the shortest completion our parser takes, no reasoning, one "
                f"notion (the problem's MATH subject), pass rate 8, length 4500, {p['meta_floor_response_chars_mean']:.0f} "
                f"characters over the same problems ({p['measured']}: {p['command']}), x 0.3 tokens per "
                "character + the eos token (JSON's punctuation makes more: a low, so conservative, count); the "
                "released meta prompt asks for 'comprehensive and detailed reasoning' before it, under the "
                "solutions' 8,192-token cap (akatigre/MASA-RL masa_train/masa_rl_dataset.py)")}
