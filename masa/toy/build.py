"""`build()`: the toy profile's model and data, made on this machine from nothing and cached on disk.

Layout of one build (``<cache>/<recipe-hash>/``)::

    model/               Qwen2 safetensors + config + generation_config + tokenizer (vLLM-loadable)
    data/train.parquet   verl layout, like /work/shared/data/math/*.parquet
    data/heldout.parquet disjoint problems
    artifacts.json       recipe, hash, parameter count, warm-start statistics, build time

A build is written to a temporary sibling and renamed into place, under a file lock, so concurrent
callers never see (or both make) a half-built directory; an existing directory is a cache hit.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from masa.algo.meta import MetaPrediction, format_meta_completion, parse_meta, render_meta_prompt
from masa.toy import task
from masa.toy.model import make_model, n_parameters
from masa.toy.recipe import TOY, ToyRecipe
from masa.toy.task import meta_reasoning
from masa.toy.tokenizer import train_tokenizer
from masa.toy.warmstart import encode, meta_parse_rate, probe, warm_start


@dataclass(frozen=True)
class WarmStartSummary:
    """Measured at the end of the warm start on the probe set (sampled at T=1, transformers)."""

    steps: int
    seconds: float
    stopped: str  # "target" or "max_steps"
    probe_pass_rate: float
    probe_mixed_fraction: float  # share of probe prompts with 0 < correct < probe_samples
    probe_meta_parse_rate: float
    meta_length_range: tuple[int, int]  # range of the random solution_length in meta examples
    history: tuple[tuple[int, float, float], ...]  # (step, pass rate, mixed fraction) per probe


@dataclass(frozen=True)
class ToyArtifacts:
    root: Path
    model_dir: Path
    train_parquet: Path
    heldout_parquet: Path
    recipe: ToyRecipe
    recipe_hash: str
    n_parameters: int
    warm_start: WarmStartSummary
    build_seconds: float  # wall time of the build (not of a cache hit)
    build_cpu_seconds: float | None = None  # CPU time of the build process (= wall on an idle core)
    cache_hit: bool = False


def default_cache_dir() -> Path:
    """``$MASA_CACHE_DIR/toy`` or ``~/.cache/masa/toy``."""
    base = os.environ.get("MASA_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "masa") / "toy"


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[masa.toy] {msg}", file=sys.stderr, flush=True)


def _load(root: Path) -> ToyArtifacts:
    info = json.loads((root / "artifacts.json").read_text())
    ws = info["warm_start"]
    ws = WarmStartSummary(**{**ws, "meta_length_range": tuple(ws["meta_length_range"]),
                             "history": tuple(tuple(h) for h in ws["history"])})
    recipe = ToyRecipe(**info["recipe"])
    return ToyArtifacts(root=root, model_dir=root / "model", train_parquet=root / "data" / "train.parquet",
                        heldout_parquet=root / "data" / "heldout.parquet", recipe=recipe,
                        recipe_hash=info["recipe_hash"], n_parameters=info["n_parameters"], warm_start=ws,
                        build_seconds=info["build_seconds"], build_cpu_seconds=info.get("build_cpu_seconds"),
                        cache_hit=True)


def build(recipe: ToyRecipe | None = None, *, cache_dir: str | os.PathLike | None = None, force: bool = False,
          progress: bool = True) -> ToyArtifacts:
    """The toy model and data for `recipe` (default `TOY`), from the cache or built now (~minutes).

    `cache_dir` holds one directory per recipe hash (default `default_cache_dir()`); `force` rebuilds.
    """
    recipe = recipe or TOY
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    key = recipe.hash()
    root = base / key
    with open(base / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "artifacts.json").exists() and not force:
            _log(progress, f"cache hit: {root}")
            return _load(root)
        tmp = base / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        threads = _torch_threads(1)
        try:
            _build_into(tmp, recipe, key, progress)
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        finally:
            _torch_threads(threads)
            shutil.rmtree(tmp, ignore_errors=True)
    art = _load(root)
    return dataclasses.replace(art, cache_hit=False)


def _torch_threads(n: int) -> int:
    """Set torch's intra-op threads, returning the previous count.

    The build runs on one thread: its matrices are tiny, and on a shared 2-core machine a second
    OpenMP thread spin-waits, costing ~5x the CPU time per step (measured: 0.3 s vs 1.5 s per
    warm-start step, 1.3 s vs 27 s per probe). One thread also makes the build bit-reproducible.
    """
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    return prev


def _build_into(out: Path, recipe: ToyRecipe, key: str, progress: bool) -> None:
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(recipe.seed)
    (out / "data").mkdir(parents=True)
    train, heldout = task.generate_splits(recipe.n_train, recipe.n_heldout, seed=recipe.seed,
                                          max_digits=recipe.max_digits, max_mul_digits=recipe.max_mul_digits)
    task.write_parquet(train, "train", out / "data" / "train.parquet")
    task.write_parquet(heldout, "heldout", out / "data" / "heldout.parquet")
    _log(progress, f"{len(train)} train / {len(heldout)} held-out problems")

    tokenizer, solutions, metas, length_range = _tokenize(recipe, train)
    model = make_model(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, n_layers=recipe.n_layers,
                       head_dim=recipe.head_dim, intermediate_size=recipe.intermediate_size,
                       max_position_embeddings=recipe.max_model_len, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, seed=recipe.seed)
    _log(progress, f"Qwen2 {n_parameters(model):,} parameters, vocab {len(tokenizer)}; warm start")
    meta_parser, meta_prompt = _meta_fns(recipe)
    probe_set = train[: recipe.n_probe]
    # Probes stop a little past the longest reference solution: a sample still going there is wrong
    # anyway, and running wrong samples to the full budget would dominate the build time.
    max_new = min(recipe.max_response_tokens, length_range[1] + 16)

    def probe_fn(step: int):
        return probe(model, tokenizer, probe_set, n=recipe.probe_samples, max_new_tokens=max_new,
                     seed=recipe.seed + step, step=step)

    def meta_fn(step: int) -> float:
        return meta_parse_rate(model, tokenizer, [meta_prompt(p.question) for p in probe_set],
                               n=recipe.probe_samples, max_new_tokens=max_new, seed=recipe.seed + step + 1,
                               parses=meta_parser)

    ws = warm_start(model, tokenizer, solutions, metas, probe_fn, meta_fn, lr=recipe.lr,
                    batch_size=recipe.batch_size, meta_every=recipe.meta_every, warmup_steps=recipe.warmup_steps,
                    probe_every=recipe.probe_every, target_pass_rate=recipe.target_pass_rate,
                    target_meta_parse_rate=recipe.target_meta_parse_rate, max_steps=recipe.max_steps,
                    seed=recipe.seed, log=lambda s: _log(progress, s))
    final = ws.final
    if final.meta_parse_rate is None:  # stopped at max_steps before the pass-rate target
        final = dataclasses.replace(final, meta_parse_rate=meta_fn(ws.steps))
    _log(progress, f"final probe: pass rate {final.pass_rate:.3f}, mixed {final.mixed_fraction:.2f}, "
                   f"meta parse {final.meta_parse_rate:.2f}")
    _save_model(model, tokenizer, out / "model")
    summary = WarmStartSummary(
        steps=ws.steps, seconds=round(ws.seconds, 2), stopped=ws.stopped, probe_pass_rate=final.pass_rate,
        probe_mixed_fraction=final.mixed_fraction, probe_meta_parse_rate=final.meta_parse_rate,
        meta_length_range=length_range,
        history=tuple((s.step, s.pass_rate, s.mixed_fraction) for s in ws.history))
    info = {"recipe": recipe.to_dict(), "recipe_hash": key, "n_parameters": n_parameters(model),
            "warm_start": dataclasses.asdict(summary), "build_seconds": round(time.perf_counter() - start, 2),
            "build_cpu_seconds": round(time.process_time() - cpu_start, 2)}
    (out / "artifacts.json").write_text(json.dumps(info, indent=2) + "\n")
    _log(progress, f"built in {info['build_seconds']:.0f}s ({info['build_cpu_seconds']:.0f}s CPU)")


def _meta_fns(recipe: ToyRecipe):
    def meta_parser(text: str) -> bool:
        parsed = parse_meta(text, n_solution=recipe.n_solution, max_response_tokens=recipe.max_response_tokens)
        return isinstance(parsed, MetaPrediction)

    def meta_prompt(question: str) -> str:
        return render_meta_prompt(question, n_solution=recipe.n_solution,
                                  max_response_tokens=recipe.max_response_tokens)

    return meta_parser, meta_prompt


def _tokenize(recipe: ToyRecipe, train):
    """Train the tokenizer on the corpus, then encode solution and (random-valued) meta examples."""
    _, meta_prompt = _meta_fns(recipe)
    prompts = [meta_prompt(p.question) for p in train]
    # A few meta completions teach the BPE the JSON's punctuation; their values need not vary,
    # since digits are always single tokens.
    rng = random.Random(recipe.seed + 1)
    corpus = [t for p, mp in zip(train, prompts, strict=True) for t in (p.question, p.solution, mp, meta_reasoning(p))]
    tokenizer = train_tokenizer(corpus + [format_meta_completion("", notions=p.notions, pass_rate=0,
                                                                 solution_length=1) for p in train[:64]],
                                vocab_size=recipe.vocab_size)
    solutions = [encode(tokenizer, p.question, p.solution) for p in train]
    lengths = sorted(len(e.ids) - e.n_prompt for e in solutions)  # incl. eos, as the rollouts count
    length_range = (lengths[0], min(lengths[-1], recipe.max_response_tokens))
    metas = [
        encode(tokenizer, mp, format_meta_completion(
            meta_reasoning(p), notions=p.notions, pass_rate=rng.randint(0, recipe.n_solution),
            solution_length=rng.randint(*length_range)))
        for p, mp in zip(train, prompts, strict=True)
    ]
    return tokenizer, solutions, metas, length_range


def _save_model(model, tokenizer, path: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
