"""One process of Hugging Face TRL's `GRPOTrainer` on the toy model: the reference that issue 16 compares a
whole project GRPO round against. Started by bench/bench_trl_round.py with TRL on the path; not imported
by the package (TRL is a bench-only dependency, installed apart from .venv:
`.venv/bin/pip install --no-deps --target .bench-trl trl==1.13.0 accelerate==1.15.0`).

    PYTHONPATH=.bench-trl .venv/bin/python bench/trl_grpo_round.py MODEL_DIR TRAIN_PARQUET --rounds 3

A round is the toy preset's GRPO round: 128 prompts x 8 completions of at most 256 tokens at T=1
(transformers generation, TRL's default without vLLM), rewarded by this project's verifier, then 32
optimizer steps of 64 samples (16 steps per generation x 2 passes: TRL's `num_iterations`, verl's
ppo_epochs), AdamW at the preset's lr, no KL term, float32 on CPU. Prints one JSON object: the seconds
of each round after the first (which pays TRL's own start-up) and their median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("train_parquet")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=128)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--out", default="/tmp/trl-grpo-bench")
    a = ap.parse_args()
    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from masa.algo.verifier import verify
    from masa.data.records import load_problems

    torch.manual_seed(0)
    problems = load_problems(a.train_parquet)[0][: a.prompts * (a.rounds + 1)]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": p.problem}], "answer": p.answer} for p in problems])

    def correct(completions, answer, **_):
        return [float(verify(c[0]["content"], gold).correct) for c, gold in zip(completions, answer, strict=True)]

    passes = 2
    per_step = a.prompts * a.n * passes // a.steps  # 64 samples per optimizer step
    cfg = GRPOConfig(
        output_dir=a.out, learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        per_device_train_batch_size=per_step, steps_per_generation=a.steps // passes, num_iterations=passes,
        num_generations=a.n, max_completion_length=a.max_tokens, temperature=1.0, top_p=1.0, beta=0.0,
        max_steps=a.steps * (a.rounds + 1), logging_steps=10_000, save_strategy="no", report_to=[],
        use_cpu=True, bf16=False, dataloader_num_workers=0, shuffle_dataset=False, seed=0, disable_tqdm=True,
    )
    tok = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    stamps: list[float] = []

    class Rounds(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step % a.steps == 0:
                stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=model, reward_funcs=correct, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Rounds()])
    trainer.train()
    rounds = [b - a_ for a_, b in zip(stamps, stamps[1:], strict=False)]
    print(json.dumps({"trl_round_s": rounds, "median_s": statistics.median(rounds), "first_round_s": stamps[0] - t0,
                      "version": trl.__version__,
                      "samples_per_round": a.prompts * a.n, "optimizer_steps_per_round": a.steps}))


if __name__ == "__main__":
    sys.exit(main())
