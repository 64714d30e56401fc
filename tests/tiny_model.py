"""A tiny random Qwen2 model + byte-level BPE tokenizer, built locally in about a second.

Importable by any test (engines, rollout, training, pipeline): nothing is downloaded. The shapes
are the smallest the vLLM CPU backend accepts (head_dim 32). The byte-level tokenizer round-trips
any text, so decoded samples and JSON meta responses survive encode/decode unchanged.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "What is 2 + 3? The answer is \\boxed{5}.",
    "Solve for x: 3x + 1 = 10. So x = 3, and the answer is \\boxed{3}.",
    'Return JSON: {"math_notion": ["algebra"], "pass_rate": 4, "solution_length": 120}',
    '{"math_notion": [], "pass_rate": 0, "solution_length": 5} {"math_notion": [], "pass_rate": 2}',
    "Let me think step by step about the geometry of the triangle and its area.",
    "Compute the sum of the first n integers: n(n+1)/2. Probability, modular arithmetic, primes.",
    "user assistant system Please reason step by step, and put your final answer within \\boxed{}.",
]


def _meta_prompt_sample() -> list[str]:
    """The meta prompt's fixed wording, so BPE merges it into few tokens (fast tests of the meta path)."""
    try:
        from masa.algo.meta import render_meta_prompt
    except ImportError:
        return []
    return [render_meta_prompt("What is 2 + 3?", n_solution=4, max_response_tokens=32)]


def build_tokenizer(vocab_size: int = 512):
    """Byte-level BPE trained on a few strings, wrapped as a PreTrainedTokenizerFast with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator((_CORPUS + _meta_prompt_sample()) * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(out_dir: str | Path, *, seed: int = 0, hidden: int = 64, layers: int = 2,
                     tied: bool = False) -> Path:
    """Write a random Qwen2 causal LM (float32 safetensors) and its tokenizer to `out_dir`.

    hidden 64 with 2 heads gives head_dim 32 (a size the vLLM CPU attention supports).
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
        max_position_embeddings=2048, tie_word_embeddings=tied, torch_dtype="float32",
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger output scale
    # makes sampling peaked enough that seeds and log-probs are a meaningful test.
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def overfit_tiny_model(model_dir: str | Path, out_dir: str | Path, pairs: list[tuple[str, str]], *,
                       steps: int = 200, lr: float = 1e-2, target_loss: float = 2e-3, seed: int = 0) -> Path:
    """Train the model of `model_dir` until it answers each chat user turn with its given text, then
    save it to `out_dir`. `pairs` are (user text, assistant response); the response ends with EOS.

    Tests of the meta path need a policy that emits parseable meta JSON: a random model never does.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from masa.toy.warmstart import Example, backward_in_pieces

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    batch = []
    for user, response in pairs:
        prompt = tok.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                         tokenize=True, return_dict=False)
        answer = tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]
        batch.append(Example(tuple(prompt) + tuple(answer), len(prompt)))
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared machine
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        # in 4 length-sorted pieces, the same gradient: meta prompts are several times longer than the
        # others, and one padded batch spent the short rows' time on padding
        loss = backward_in_pieces(model, batch, tok.pad_token_id, pieces=4)
        opt.step()
        if loss < target_loss:
            break
    out = Path(out_dir)
    model.eval().save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
