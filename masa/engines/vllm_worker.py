"""Methods added to vLLM's workers (`worker_extension_cls`), called by name with `collective_rpc`.

Loaded by vLLM inside each worker process (or in ours, for an in-process engine), so it imports vLLM
only inside its methods. Names start with `masa_`: vLLM refuses an extension whose attribute names
clash with its worker's.
"""

from __future__ import annotations


class MasaWorkerExtension:
    def masa_repack_tied_head(self) -> None:
        """Runs after `reload_weights`. On CPU vLLM 0.32 packs each linear layer's weight for its GEMM
        kernel (oneDNN or sgl) when the model loads, the LM head included; with tied embeddings
        (Qwen3-0.6B/1.7B, our toy) the checkpoint holds no `lm_head.weight`, so the reload rewrites the
        embedding, which is the head's weight, but never repacks the head: the logits kept the old
        policy's head (log-probs 0.02 nats off after one toy round, token choices changed; measured
        2026-12-02). Repacking it from its current weight gives a fresh engine's numbers exactly
        (tests/test_engine_service.py). GPUs do not pack; nothing to do there."""
        from vllm.config import set_current_vllm_config
        from vllm.platforms import current_platform

        model = self.model_runner.model
        head = getattr(model, "lm_head", None)
        if not current_platform.is_cpu() or head is None or not getattr(model.config, "tie_word_embeddings", False):
            return
        with set_current_vllm_config(self.vllm_config):
            head.quant_method.process_weights_after_loading(head)
