"""The toy policy: a randomly initialised Qwen2 decoder of well under a million parameters.

Qwen2 because vLLM, transformers and the DeepSpeed trainer all know it; the toy only shrinks it. vLLM's
CPU attention supports head_dim 32, 64 or 128, so the width is a multiple of one of those.
"""

from __future__ import annotations

VLLM_HEAD_DIMS = (32, 64, 128)


def make_model(*, vocab_size: int, hidden_size: int, n_layers: int, head_dim: int, intermediate_size: int,
               max_position_embeddings: int, eos_token_id: int, pad_token_id: int, seed: int):
    """A fresh float32 `Qwen2ForCausalLM` (tied embeddings), initialised deterministically from `seed`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if head_dim not in VLLM_HEAD_DIMS:
        raise ValueError(f"head_dim must be one of {VLLM_HEAD_DIMS} (vLLM CPU attention), got {head_dim}")
    if hidden_size % head_dim:
        raise ValueError(f"hidden_size ({hidden_size}) must be a multiple of head_dim ({head_dim})")
    n_heads = hidden_size // head_dim
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads,
        max_position_embeddings=max_position_embeddings, rope_theta=10000.0, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos_token_id, pad_token_id=pad_token_id, torch_dtype="float32",
        use_sliding_window=False,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config).float()


def n_parameters(model) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
