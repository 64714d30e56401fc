"""transformers backend: a small KV-cached sampling loop over `AutoModelForCausalLM` (fallback engine).

We run our own loop instead of `model.generate` because we need, per row, the raw (T=1) log-prob of
the sampled token, the exact step a row stopped (EOS, stop string or its own token limit), per-request
sampling parameters and a seeded generator per request (so a request's samples do not depend on what
else is in the batch); `generate` takes one set of parameters per call and pads finished rows with a
pad token that a model may also sample. All requests' samples run as one left-padded batch.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from masa.engines.base import (
    EngineConfig,
    GenerationRequest,
    Sample,
    finish_reason,
    resolve_model_dir,
)


def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _per_row(value, rows: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A scalar or [R] parameter as an [R, 1] column on `like`'s device."""
    t = torch.as_tensor(value, dtype=dtype or like.dtype, device=like.device)
    return t.reshape(-1, 1).expand(rows, 1)


def processed_logits(logits: torch.Tensor, *, temperature, top_p, top_k) -> torch.Tensor:
    """Logits [R, V] after temperature, top-k (-1 = off) and top-p (1 = off); masked entries are -inf.

    Each parameter is a scalar or an [R] tensor (one value per row).
    """
    R, V = logits.shape
    x = logits / _per_row(temperature, R, logits)
    k = _per_row(top_k, R, logits, torch.long)
    k = torch.where((k < 1) | (k > V), V, k)
    p = _per_row(top_p, R, logits)
    sorted_x, idx = torch.sort(x, dim=-1, descending=True)
    probs = torch.softmax(sorted_x, dim=-1)
    rank = torch.arange(V, device=logits.device).expand(R, V)
    # Keep the top-k, and the smallest prefix whose mass reaches top_p (mass *before* a token < top_p).
    drop_sorted = (rank >= k) | ((probs.cumsum(-1) - probs >= p) & (p < 1))
    drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
    return x.masked_fill(drop, float("-inf"))


class _Rows:
    """The batch of one `generate` call flattened to rows (request r's n samples are adjacent), with
    per-row sampling parameters as [R] tensors and one seeded generator per request."""

    def __init__(self, requests: list[GenerationRequest], device: torch.device, default_seed: int) -> None:
        specs = [r.sampling for r in requests for _ in range(r.sampling.n)]
        prompts = [list(r.prompt_token_ids) for r in requests for _ in range(r.sampling.n)]
        width = max(map(len, prompts))
        # Left padding: every row's next token sits in the last column. Pad id 0 is masked out.
        self.input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
        self.attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        self.n_rows = len(specs)
        self.temperature = torch.tensor([s.temperature for s in specs], device=device)
        self.top_p = torch.tensor([s.top_p for s in specs], device=device)
        self.top_k = torch.tensor([s.top_k for s in specs], device=device)
        self.limit = torch.tensor([s.limit for s in specs], device=device)
        self.stops = [s.stop for s in specs]
        self.max_stop_chars = max((len(x) for s in specs for x in s.stop), default=0)
        self.spans, self.generators, r = [], [], 0
        for req in requests:
            g = torch.Generator(device=device)
            g.manual_seed(req.sampling.seed if req.sampling.seed is not None else default_seed)
            self.generators.append(g)
            self.spans.append((r, r + req.sampling.n))
            r += req.sampling.n

    @staticmethod
    def positions(mask: torch.Tensor) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0)

    def sample(self, logits: torch.Tensor) -> torch.Tensor:
        """One token per row from softmax(logits), request by request from its own generator."""
        probs = torch.softmax(logits, dim=-1)
        return torch.cat([torch.multinomial(probs[a:b], 1, generator=g).squeeze(-1)
                          for (a, b), g in zip(self.spans, self.generators, strict=True)])


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
        # the context a caller may rely on (prompt + response): as vLLM's, the model's positions cap it
        positions = getattr(self._model.config, "max_position_embeddings", None) or config.max_model_len
        self.max_model_len = min(config.max_model_len, positions)
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
        if not requests:
            return []
        rows = _Rows(requests, self.device, self.config.seed)
        tok_mat, lp_mat, lengths, stopped = self._sample_loop(rows)
        out, r = [], 0
        for req in requests:
            out.append([self._sample(req, tok_mat[i, : lengths[i]], lp_mat[i, : lengths[i]], bool(stopped[i]))
                        for i in range(r, r + req.sampling.n)])
            r += req.sampling.n
        return out

    def load_weights(self, model_dir: str | Path) -> None:
        local = resolve_model_dir(str(model_dir))
        self._model = self._load(local)
        self.model_dir = local

    def close(self) -> None:
        self._model = None

    @torch.inference_mode()
    def _sample_loop(self, rows: _Rows):
        """Sample every row to its stop or limit: (tokens [R, L], logprobs [R, L], lengths [R], stopped [R])."""
        mask = rows.attention_mask
        out = self._model(input_ids=rows.input_ids, attention_mask=mask, position_ids=rows.positions(mask),
                          use_cache=True)
        tokens, lps = [], []
        done = torch.zeros(rows.n_rows, dtype=torch.bool, device=self.device)
        stopped = torch.zeros_like(done)
        lengths = rows.limit.cpu().clone()
        for step in range(int(rows.limit.max())):
            logits = out.logits[:, -1, :].float()
            tok = rows.sample(processed_logits(logits, temperature=rows.temperature, top_p=rows.top_p,
                                               top_k=rows.top_k))
            tokens.append(tok)
            lps.append(torch.log_softmax(logits, dim=-1).gather(-1, tok[:, None]).squeeze(-1))
            hit = torch.isin(tok, self.eos_ids) | self._stop_string_hit(tokens, rows)
            new = hit & ~done
            lengths[new.cpu()] = step + 1
            stopped |= new
            done |= hit | (rows.limit <= step + 1)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            out = self._model(input_ids=tok[:, None], attention_mask=mask, position_ids=rows.positions(mask)[:, -1:],
                              past_key_values=out.past_key_values, use_cache=True)
        return torch.stack(tokens, 1).cpu(), torch.stack(lps, 1).cpu(), lengths, stopped.cpu()

    def _stop_string_hit(self, tokens: list[torch.Tensor], rows: _Rows) -> torch.Tensor:
        hit = torch.zeros(tokens[0].shape[0], dtype=torch.bool, device=self.device)
        if not rows.max_stop_chars:
            return hit
        # A stop string spans at most len(s) tokens (every token decodes to >= 1 character, bar
        # partial bytes): decoding that tail each step is enough to see it appear.
        tail = torch.stack(tokens[-(rows.max_stop_chars + 4):], 1).tolist()
        for i, stops in enumerate(rows.stops):
            if stops:
                text = self._tokenizer.decode(tail[i], skip_special_tokens=True)
                hit[i] = any(s in text for s in stops)
        return hit

    def _sample(self, req: GenerationRequest, toks: torch.Tensor, lps: torch.Tensor, stopped: bool) -> Sample:
        ids = tuple(int(t) for t in toks)
        text = self._tokenizer.decode(list(ids), skip_special_tokens=True)
        cuts = [text.find(s) for s in req.sampling.stop if s in text]
        if cuts:  # like vLLM: the stop string and what follows are not part of the text
            text = text[: min(cuts)]
        return Sample(text, tuple(req.prompt_token_ids), ids, tuple(float(v) for v in lps),
                      finish_reason(stopped, len(ids), req.sampling))
