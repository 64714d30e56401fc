"""A small byte-level BPE tokenizer trained on the toy corpus, with every digit a token of its own.

Digits are split before BPE (``Digits(individual_digits=True)``), so no merge ever joins two digits or a
digit and another character: column arithmetic then maps one digit to one position, which is what
lets a model of ~1M parameters learn it in a CPU-minute. Byte-level pre-tokenization keeps any text
encodable (no unknown token), so prompts that never appeared in the corpus still tokenize.

Saved as a `PreTrainedTokenizerFast` directory with a Qwen-style chat template; `<|im_end|>` ends a turn
and is the eos token, `<|endoftext|>` pads.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD, IM_START, IM_END)

# Qwen's chat layout without the default system turn: the toy model never saw one.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, added: tuple[str, ...] = ()):
    """Train the BPE on `texts` and wrap it as a `transformers.PreTrainedTokenizerFast`.

    `vocab_size` counts the 256 byte symbols and the special tokens; training is deterministic.
    `added`: strings that become one (non-special) token each, matched before the BPE, on top of it.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + specials), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if added:
        tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in added])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, unk_token=None, bos_token=None,
        additional_special_tokens=[IM_START], model_max_length=4096, padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def chat_prompt(tokenizer, content: str) -> str:
    """The templated single user turn followed by the assistant header (what the engines send)."""
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
