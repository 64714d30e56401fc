"""Token log-probs from logits: masa's blockwise `token_logprobs` against log_softmax + gather, side by side.

Measures forward + backward time and, on CUDA, the peak memory each adds on top of the logits, for the
trainer's pattern: a non-contiguous `logits[:, :-1]` view, float32 log-probs, gradient back to the logits.

    .venv/bin/python bench/bench_logprobs.py                       # CPU, small
    python bench/bench_logprobs.py --device cuda --n 8 --t 4096 --v 151936 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from masa.algo.losses import token_logprobs


def reference(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """What a trainer writes without care: a full float32 log_softmax, kept for backward."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[..., None]).squeeze(-1)


CHUNK_ROWS = 1024


def chunked(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return token_logprobs(logits, tokens, chunk_rows=CHUNK_ROWS)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn, full: torch.Tensor, tokens: torch.Tensor, reps: int) -> tuple[float, float | None]:
    """Median seconds of forward + backward, and peak extra bytes (CUDA only) over the inputs."""
    device = full.device
    times, peak = [], None
    for i in range(reps + 1):
        full.grad = None
        _sync(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn(full[:, :-1], tokens)
        out.sum().backward()
        _sync(device)
        if i > 0:  # the first run warms up kernels and the allocator
            times.append(time.perf_counter() - t0)
        if device.type == "cuda":
            # The gradient of the logits is the same size for both; count it out of the peak.
            peak = torch.cuda.max_memory_allocated() - base - full.grad.numel() * full.grad.element_size()
        del out
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--t", type=int, default=256)
    ap.add_argument("--v", type=int, default=32000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    a = ap.parse_args()
    global CHUNK_ROWS
    CHUNK_ROWS = a.chunk_rows
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    g = torch.Generator(device=device).manual_seed(0)
    full = (torch.randn(a.n, a.t + 1, a.v, generator=g, device=device) * 2).to(dtype).requires_grad_(True)
    tokens = torch.randint(0, a.v, (a.n, a.t), generator=g, device=device)
    gap = (chunked(full[:, :-1], tokens) - reference(full[:, :-1], tokens)).abs().max().item()
    logits_bytes = full.numel() * full.element_size()
    print(f"device={device} dtype={a.dtype} N={a.n} T={a.t} V={a.v} chunk_rows={a.chunk_rows} logits={logits_bytes / 2**30:.2f} GiB "
          f"max|diff|={gap:.2e}")
    t_ref, m_ref = measure(reference, full, tokens, a.reps)
    t_chk, m_chk = measure(chunked, full, tokens, a.reps)
    print(f"log_softmax+gather : {t_ref * 1e3:9.1f} ms" + (f"  peak extra {m_ref / 2**30:.2f} GiB" if m_ref else ""))
    print(f"token_logprobs     : {t_chk * 1e3:9.1f} ms" + (f"  peak extra {m_chk / 2**30:.2f} GiB" if m_chk else ""))
    line = f"ratio token_logprobs / log_softmax: time {t_chk / t_ref:.2f}x"
    if m_ref and m_chk:
        line += f", peak extra memory {m_chk / m_ref:.2f}x"
    print(line)


if __name__ == "__main__":
    main()
