"""transformers backend: a small KV-cached sampling loop over `AutoModelForCausalLM` (fallback engine).

We run our own loop instead of `model.generate` because we need, per row, the raw (T=1) log-prob of
the sampled token, the exact step a row stopped (EOS or stop string) and a seeded generator per
request; `generate` pads finished rows with a pad token that a model may also sample. The n samples
of a request run as one batch (they share the prompt, so no padding); requests run one after another.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from masa.engines.base import (
    EngineConfig,
    GenerationRequest,
    Sample,
    SamplingSpec,
    finish_reason,
    resolve_model_dir,
)


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def processed_logits(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Logits [R, V] after temperature, top-k (-1 = off) and top-p (1 = off); masked entries are -inf."""
    x = logits / temperature
    if top_k != -1 and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, idx = torch.sort(x, dim=-1, descending=True)
        cum = torch.softmax(sorted_x, dim=-1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_x, dim=-1) >= top_p  # keep the smallest set reaching top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


class HFEngine:
    """An `Engine` backed by transformers (see `masa.engines.base`)."""

    backend = "transformers"

    def __init__(self, config: EngineConfig) -> None:
        from transformers import AutoTokenizer

        self.config = config
        self.model_dir = resolve_model_dir(config.model)
        t0 = time.perf_counter()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self._model = self._load(self.model_dir)
        eos = self._model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if self._tokenizer.eos_token_id is not None:
            eos.append(self._tokenizer.eos_token_id)
        self.eos_ids = torch.tensor(sorted(set(eos)), device=self.device)
        self.startup_s = time.perf_counter() - t0

    def _load(self, model_dir: Path):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=_torch_dtype(self.config.dtype))
        return model.to(self.device).eval()

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, requests: list[GenerationRequest]) -> list[list[Sample]]:
        return [self._generate_one(r) for r in requests]

    def load_weights(self, model_dir: str | Path) -> None:
        local = resolve_model_dir(str(model_dir))
        self._model = self._load(local)
        self.model_dir = local

    def close(self) -> None:
        self._model = None

    @torch.inference_mode()
    def _generate_one(self, req: GenerationRequest) -> list[Sample]:
        spec = req.sampling
        gen = torch.Generator(device=self.device)
        gen.manual_seed(spec.seed if spec.seed is not None else self.config.seed)
        ids = torch.tensor([list(req.prompt_token_ids)] * spec.n, device=self.device)
        out = self._model(input_ids=ids, use_cache=True)
        tokens, lps = [], []
        done = torch.zeros(spec.n, dtype=torch.bool, device=self.device)
        stopped = torch.zeros_like(done)
        lengths = torch.full((spec.n,), spec.limit, dtype=torch.long)
        for step in range(spec.limit):
            logits = out.logits[:, -1, :].float()
            x = processed_logits(logits, temperature=spec.temperature, top_p=spec.top_p, top_k=spec.top_k)
            tok = torch.multinomial(torch.softmax(x, dim=-1), 1, generator=gen).squeeze(-1)
            tokens.append(tok)
            lps.append(torch.log_softmax(logits, dim=-1).gather(-1, tok[:, None]).squeeze(-1))
            hit = torch.isin(tok, self.eos_ids) | self._stop_string_hit(tokens, spec)
            new = hit & ~done
            lengths[new.cpu()] = step + 1
            stopped |= new
            done |= hit
            if bool(done.all()):
                break
            out = self._model(input_ids=tok[:, None], past_key_values=out.past_key_values, use_cache=True)
        tok_mat, lp_mat = torch.stack(tokens, 1).cpu(), torch.stack(lps, 1).cpu()
        return [self._sample(req, tok_mat[i, : lengths[i]], lp_mat[i, : lengths[i]], bool(stopped[i]))
                for i in range(spec.n)]

    def _stop_string_hit(self, tokens: list[torch.Tensor], spec: SamplingSpec) -> torch.Tensor:
        hit = torch.zeros(tokens[0].shape[0], dtype=torch.bool, device=self.device)
        if not spec.stop:
            return hit
        # A stop string spans at most len(s) tokens (every token decodes to >= 1 character, bar
        # partial bytes): decoding that tail each step is enough to see it appear.
        tail = torch.stack(tokens[-(max(len(s) for s in spec.stop) + 4):], 1).tolist()
        for i, row in enumerate(tail):
            text = self._tokenizer.decode(row, skip_special_tokens=True)
            hit[i] = any(s in text for s in spec.stop)
        return hit

    def _sample(self, req: GenerationRequest, toks: torch.Tensor, lps: torch.Tensor, stopped: bool) -> Sample:
        ids = tuple(int(t) for t in toks)
        text = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        cuts = [text.find(s) for s in req.sampling.stop if s in text]
        if cuts:  # like vLLM: the stop string and what follows are not part of the text
            text = text[: min(cuts)]
        return Sample(text, tuple(req.prompt_token_ids), ids, tuple(float(v) for v in lps),
                      finish_reason(stopped, len(ids), req.sampling))
