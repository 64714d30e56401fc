"""Training throughput and model FLOPs utilisation (MFU) of our policy-gradient step on ONE GPU.

A randomly initialised model of Qwen3-0.6B's or Qwen3-8B-Base's shape (`--shape`; configs written by
hand: nothing is downloaded) in bf16, trained with exactly the trainer's objective path: logits -> masa
token_logprobs -> policy_loss (clip-higher, dual clip, token-mean) -> backward -> grad clip -> AdamW.
transformers + torch only (no vLLM, no DeepSpeed: this measures the single-device compute, which ZeRO
does not change).

    python bench/gpu_train_mfu.py                     # GPU: Qwen3-0.6B shape, 8 x 2048 tokens per step
    python bench/gpu_train_mfu.py --batch 4 --seq 4096 --no-grad-ckpt
    python bench/gpu_train_mfu.py --shape 8b --batch 1 --seq 8192   # the paper's model, all 36 layers
    .venv/bin/python bench/gpu_train_mfu.py --tiny    # CPU smoke run (seconds), as the tests do

Time-boxed (--time-box seconds, default 120, model build included); prints one JSON object.
MFU = (model FLOPs per token x tokens/s) / peak dense bf16 FLOP/s, with model FLOPs per token =
6 x (non-embedding parameters + the LM head's hidden x vocab) + 12 x layers x heads x head_dim x seq
(the PaLM convention: attention counted without the causal halving; the recomputation done by
gradient checkpointing is not counted, so MFU stays comparable with and without it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from masa.algo.losses import policy_loss, token_logprobs  # noqa: E402

SHAPE_NAMES = {"0.6b": "Qwen3-0.6B-shape", "8b": "Qwen3-8B-Base-shape"}
# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def qwen3_config(tiny: bool, shape: str = "0.6b"):
    from transformers import Qwen3Config

    if tiny:
        return Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                           max_position_embeddings=1024, tie_word_embeddings=True)
    if shape == "8b":  # Qwen/Qwen3-8B-Base config.json, by hand: 8.19B parameters, untied LM head
        return Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                           num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                           max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                           tie_word_embeddings=False, attention_bias=False)
    # Qwen/Qwen3-0.6B config.json, by hand
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                       max_position_embeddings=40960, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                       tie_word_embeddings=True, attention_bias=False)


def flops_per_token(model, cfg, seq: int) -> tuple[float, int]:
    """Model FLOPs per trained token (see module docstring) and the non-embedding parameter count."""
    n_embed = cfg.vocab_size * cfg.hidden_size
    n_total = sum(p.numel() for p in model.parameters())
    n_nonembed = n_total - n_embed * (1 if cfg.tie_word_embeddings else 2)
    dense = 6 * (n_nonembed + cfg.hidden_size * cfg.vocab_size)
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq
    return float(dense + attn), n_nonembed


def make_batch(batch: int, seq: int, vocab: int, device, gen: torch.Generator):
    ids = torch.randint(3, vocab, (batch, seq), generator=gen).to(device)
    mask = torch.zeros(batch, seq - 1, dtype=torch.bool, device=device)
    mask[:, seq // 4:] = True  # first quarter is the prompt, the rest the response
    adv = (torch.randint(0, 2, (batch,), generator=gen).float() * 2 - 1).to(device)
    return ids, mask, adv


def train_step(model, opt, ids, mask, adv, old_logp) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
    logp = token_logprobs(logits, ids[:, 1:])
    loss, _ = policy_loss(logp, old_logp if old_logp is not None else logp.detach(), adv, mask)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach(), logp.detach()


def run(args) -> dict:
    from transformers import Qwen3ForCausalLM

    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and not args.cpu
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = qwen3_config(args.tiny, args.shape)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(dtype)  # built in bf16 directly: 8B in fp32 first would take 33 GB for nothing
    try:
        with torch.device(device):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(torch.float32)
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.1)
    fpt, n_nonembed = flops_per_token(model, cfg, args.seq)
    gen = torch.Generator().manual_seed(0)
    batch = args.batch
    times, losses, old = [], [], None
    note = None
    while True:
        try:
            ids, mask, adv = make_batch(batch, args.seq, cfg.vocab_size, device, gen)
            for i in range(args.warmup + args.max_steps):
                if time.perf_counter() - t_start > args.time_box - (2 * times[-1] if times else 0):
                    break
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                loss, logp = train_step(model, opt, ids, mask, adv, old)
                old = logp if old is None else old  # on-policy first step, then a fixed "rollout" policy
                if cuda:
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
                losses.append(float(loss))
            break
        except torch.OutOfMemoryError:
            if batch == 1:
                raise
            opt.zero_grad(set_to_none=True)
            old, times, losses = None, [], []
            torch.cuda.empty_cache()
            note = f"out of memory at batch {batch}; halved"
            batch //= 2
    step_s = statistics.median(times) if times else None
    tps = batch * args.seq / step_s if step_s else None
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if k in name), None) if cuda else None
    achieved = fpt * tps if tps else None
    return {
        "device": name, "dtype": str(dtype).removeprefix("torch."), "model": "tiny" if args.tiny else SHAPE_NAMES[args.shape],
        "non_embedding_params": n_nonembed, "batch": batch, "seq": args.seq, "tokens_per_step": batch * args.seq,
        "grad_ckpt": args.grad_ckpt, "steps_measured": len(times), "step_seconds_median": step_s,
        "tokens_per_s": tps, "model_flops_per_token": fpt,
        "achieved_tflops": achieved / 1e12 if achieved else None,
        "peak_tflops": peak / 1e12 if peak else None, "mfu": achieved / peak if achieved and peak else None,
        "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
        "wall_seconds": time.perf_counter() - t_start, "note": note,
        "torch": torch.__version__, "transformers": _version("transformers"),
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny model, CPU friendly (smoke test)")
    ap.add_argument("--shape", choices=sorted(SHAPE_NAMES), default="0.6b", help="model shape (default 0.6b)")
    ap.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 8; tiny 2)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 2048; tiny 64)")
    ap.add_argument("--grad-ckpt", action=argparse.BooleanOptionalAction, default=True,
                    help="gradient checkpointing, as the trainer uses on GPU (default on)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=30)
    ap.add_argument("--time-box", type=float, default=120.0, help="seconds, model build included")
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's bf16 peak")
    args = ap.parse_args(argv)
    args.batch = args.batch or (2 if args.tiny else 8)
    args.seq = args.seq or (64 if args.tiny else 2048)
    return args


if __name__ == "__main__":
    print(json.dumps(run(parse()), indent=1))
