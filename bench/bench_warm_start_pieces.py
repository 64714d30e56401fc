"""The toy warm start's batch run whole (padded to its longest) against run in length-sorted pieces.

    .venv/bin/python bench/bench_warm_start_pieces.py [--recipes wandering-broad broad] [--batches 40] [--steps 80]

`masa.toy.warmstart.backward_in_pieces` splits a batch into pieces sorted by length, each padded to its
own longest, and divides each piece's summed token loss by the batch's token count: the same loss and
gradient as the padded batch, less padding. For each recipe (its data and tokenizer built as the build
builds them, wrong turns included where the recipe has them; its own `micro_batches` ignored), from the
same randomly initialised model, under the build's threads and deterministic kernels, prints:

- padded / example  mean padded length of a solution batch / mean length of an example (tokens), over
                    `--batches` batches drawn as the warm start draws them
- grad_diff         largest difference of a parameter's gradient, 4 pieces against whole, on the first
                    of them, and the largest gradient (the scale it is a difference of)
- ms/step           forward + backward of those batches, whole and in 2, 4 and 8 pieces, each against whole
- warm start        `--steps` steps of `masa.toy.warmstart.warm_start` itself (a meta batch every
                    `meta_every`-th, optimizer, clipping), whole and in 4 pieces, against whole

Timed side by side in one process; the whole batch is timed again last, so a drift of the machine shows.
"""

from __future__ import annotations

import argparse
import copy
import random
import time


def _setup(recipe):
    """The build's data, tokenizer and initial model for `recipe` (masa.toy.build), without the warm start."""
    from masa.toy.build import _new_model, _problems, _tokenize

    train, _, extra = _problems(recipe)
    tokenizer, solutions, metas, _ = _tokenize(recipe, train, extra)
    return tokenizer, solutions, metas, _new_model(recipe, tokenizer)


def _grads(model, batch, pad, pieces):
    from masa.toy.warmstart import backward_in_pieces

    model.zero_grad(set_to_none=True)
    backward_in_pieces(model, batch, pad, pieces)
    return [p.grad.clone() for p in model.parameters()]


def _time_batches(model, batches, pad) -> None:
    from masa.toy.warmstart import backward_in_pieces

    times: dict[int, float] = {}
    for pieces in (1, 2, 4, 8, 1):
        start = time.perf_counter()
        for b in batches:
            model.zero_grad(set_to_none=True)
            backward_in_pieces(model, b, pad, pieces)
        ms = (time.perf_counter() - start) / len(batches) * 1000
        times.setdefault(pieces, ms)
        print(f"  {pieces} piece(s): {ms:6.1f} ms/step  {ms / times[1]:.2f}x whole", flush=True)


def _time_warm_start(recipe, tokenizer, solutions, metas, model, steps: int) -> None:
    from masa.toy.warmstart import warm_start

    times: dict[str, float] = {}
    for label, pieces in (("whole", 1), ("4 pieces", 4), ("whole", 1)):
        stats = warm_start(copy.deepcopy(model), tokenizer, solutions, metas, lr=recipe.lr,
                           batch_size=recipe.batch_size, meta_every=recipe.meta_every,
                           warmup_steps=recipe.warmup_steps, final_lr_ratio=recipe.final_lr_ratio, steps=steps,
                           seed=recipe.seed, micro_batches=pieces)
        ms = stats.seconds / steps * 1000
        times.setdefault(label, ms)
        print(f"  warm start, {label}: {ms:6.1f} ms/step  {ms / times['whole']:.2f}x whole", flush=True)


def measure(name: str, n_batches: int, steps: int) -> None:
    from masa.toy.build import _reproducible
    from masa.toy.recipe import get_recipe

    recipe = get_recipe(name)
    with _reproducible():
        tokenizer, solutions, metas, model = _setup(recipe)
        pad = tokenizer.pad_token_id
        rng = random.Random(recipe.seed)
        batches = [rng.sample(solutions, recipe.batch_size) for _ in range(n_batches)]
        padded = sum(max(len(e.ids) for e in b) for b in batches) / n_batches
        mean = sum(len(e.ids) for b in batches for e in b) / (n_batches * recipe.batch_size)
        whole = _grads(model, batches[0], pad, 1)
        diff = max((a - b).abs().max().item() for a, b in zip(_grads(model, batches[0], pad, 4), whole, strict=True))
        scale = max(g.abs().max().item() for g in whole)
        print(f"{name}: padded / example {padded:.0f} / {mean:.0f} tokens; grad_diff (4 pieces) {diff:.1e} "
              f"of {scale:.2f}", flush=True)
        _time_batches(model, batches, pad)
        _time_warm_start(recipe, tokenizer, solutions, metas, model, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", nargs="+", default=["wandering-broad", "broad"])
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--steps", type=int, default=80)
    args = ap.parse_args()
    for name in args.recipes:
        measure(name, args.batches, args.steps)


if __name__ == "__main__":
    main()
