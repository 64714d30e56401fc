"""`build()`: the toy profile's model and data, made on this machine from nothing and cached on disk.

Layout of one build (``<cache>/<recipe-hash>/``)::

    model/               Qwen2 safetensors + config + generation_config + tokenizer (vLLM-loadable)
    data/train.parquet   verl layout, like /work/shared/data/math/*.parquet
    data/heldout.parquet disjoint problems
    artifacts.json       recipe, hash, parameter count, warm-start statistics, build time

A build is written to a temporary sibling and renamed into place, under a file lock, so concurrent
callers never see (or both make) a half-built directory; an existing directory is a cache hit.

Reproducible: a fixed step count, every seed fixed, a fixed torch thread count, deterministic kernels
(`torch.use_deterministic_algorithms`) and MKL's strict reproducibility mode (set when `masa` is imported,
recorded in artifacts.json as `mkl_cbwr`) during the build, so the same recipe gives the same bytes
(tests/test_toy_build.py builds the smoke toy in two caches and compares). Progress: one line per
phase and, during the warm start, a bar on a terminal or a line every ~10% with the time left.
"""

from __future__ import annotations

import contextlib
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

from masa.algo.meta import (
    KEYS,
    META_CLOSE,
    META_OPEN,
    MetaPrediction,
    format_meta_completion,
    parse_meta,
    render_meta_prompt,
)
from masa.toy import task
from masa.toy.chain import random_chain
from masa.toy.model import make_model, n_parameters
from masa.toy.recipe import TOY, ToyRecipe
from masa.toy.tokenizer import train_tokenizer
from masa.toy.warmstart import encode, meta_parse_rate, probe, warm_start


@dataclass(frozen=True)
class WarmStartSummary:
    """The warm start's steps and time, and the probe after it (sampled at T=1, transformers)."""

    steps: int
    seconds: float
    final_loss: float  # loss of the last batch
    probe_pass_rate: float
    probe_mixed_fraction: float  # share of probe prompts with 0 < correct < probe_samples
    probe_meta_parse_rate: float
    meta_length_range: tuple[int, int]  # range of the random solution_length in meta examples
    probe_seconds: float = 0.0


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


def _load(root: Path, recipe: ToyRecipe) -> ToyArtifacts:
    """The cached build of `recipe` (its hash named the directory). The recipe is the caller's, not the
    one recorded in artifacts.json: a build written by a newer version of this code records fields this
    one does not know, and fields added later enter the hash only at non-default values, so a matching
    hash means they were at their defaults (measured: an entry recording `max_quotient` made
    `ToyRecipe(**recorded)` raise after that field was reverted)."""
    info = json.loads((root / "artifacts.json").read_text())
    known = {f.name for f in dataclasses.fields(WarmStartSummary)}  # a newer build may record more figures
    ws = {k: v for k, v in info["warm_start"].items() if k in known}
    ws = WarmStartSummary(**{**ws, "meta_length_range": tuple(ws["meta_length_range"])})
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
            return _load(root, recipe)
        tmp = base / f"{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with _reproducible():
            try:
                _build_into(tmp, recipe, key, progress)
                shutil.rmtree(root, ignore_errors=True)
                tmp.rename(root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    art = _load(root, recipe)
    return dataclasses.replace(art, cache_hit=False)


# Intra-op threads of the build, fixed: a matrix product's partial sums are split by thread count, so
# the count is part of what the bytes depend on. 1 and 2 (and 4) threads give the same bits here, 3 do
# not (measured 2026-12-02, AVX2 EPYC, 120 warm-start steps); 2 is 1.6x faster than 1 on 2 idle cores
# (0.33 against 0.54 s per step) and keeps the same model as the 1-thread builds before it.
BUILD_THREADS = 2


_MKL_BRANCHES = {1: "off", 2: "AUTO", 3: "COMPATIBLE"}


def mkl_cnr() -> str:
    """MKL's conditional-numerical-reproducibility mode in this process: "AUTO,STRICT" (masa's default,
    masa/__init__.py), "off", another branch, or "no MKL" where torch's CPU build links none. Read
    through the MKL that torch's CPU library carries; call it only after MKL has done work (the first
    call of MKL fixes the mode)."""
    import ctypes

    import torch

    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "no MKL"
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    mode = get(-1)  # MKL_CBWR_ALL: the branch in the low bits, MKL_CBWR_STRICT = 0x10000
    branch = _MKL_BRANCHES.get(mode & 0xFFFF, f"branch {mode & 0xFFFF}")
    return branch + (",STRICT" if mode & 0x10000 else "")


@contextlib.contextmanager
def _reproducible():
    """`BUILD_THREADS` intra-op threads and deterministic kernels for the build; the caller's settings
    restored after.

    A fixed thread count, not the machine's: the reductions of a matrix product are then split the same
    way whatever the core count (tests/test_toy_build.py builds the smoke toy with 1 and 2 threads and
    compares the bytes). On a machine whose cores are busy with other work, a second OpenMP thread
    spin-waits (measured on a loaded 2-core box: 1.5 s against 0.3 s CPU per step); `masa run` builds
    the toy before its pipeline starts, so the build has the machine to itself. Deterministic
    algorithms: torch raises rather than use a kernel with no deterministic variant, so a future change
    cannot silently lose reproducibility.
    """
    import torch

    saved, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(BUILD_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(saved)


class _Progress:
    """Phase lines on stderr, and the warm start's steps as a tqdm bar on a terminal or, elsewhere (a
    pipeline log, CI), a line every ~10% of the steps with the time left."""

    def __init__(self, enabled: bool, steps: int) -> None:
        from masa.telemetry.progress import enabled as bar_enabled

        self.on, self.steps, self.start = enabled, steps, time.perf_counter()
        self.bar = None
        self.lines = enabled and not bar_enabled()
        self.every = max(1, steps // 10)
        self.t0 = 0.0

    def phase(self, msg: str) -> None:
        _log(self.on, f"{msg} ({time.perf_counter() - self.start:.0f}s)")

    def begin_steps(self) -> None:
        self.t0 = time.perf_counter()
        if self.on and not self.lines:
            from masa.telemetry.progress import progress

            self.bar = progress(total=self.steps, desc="[masa.toy] warm start", unit="step")

    def step(self, step: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        elif self.lines and (step % self.every == 0 or step == self.steps):
            spent = time.perf_counter() - self.t0
            left = spent / step * (self.steps - step)
            _log(True, f"warm start: step {step}/{self.steps}, loss {loss:.3f}, {spent:.0f}s, ~{left:.0f}s left")

    def end_steps(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _build_into(out: Path, recipe: ToyRecipe, key: str, progress: bool) -> None:
    import torch

    start, cpu_start = time.perf_counter(), time.process_time()
    show = _Progress(progress, recipe.steps)
    show.phase(f"building recipe {recipe.name} ({key}): data, tokenizer, {recipe.steps} warm-start steps, probe")
    torch.manual_seed(recipe.seed)
    (out / "data").mkdir(parents=True)
    train, heldout, extra = _problems(recipe)
    task.write_parquet(train, "train", out / "data" / "train.parquet")
    task.write_parquet(heldout, "heldout", out / "data" / "heldout.parquet")
    show.phase(f"data: {len(train)} train / {len(heldout)} held-out problems; training the tokenizer")
    tokenizer, solutions, metas, length_range = _tokenize(recipe, train, extra)
    model = _new_model(recipe, tokenizer)
    show.phase(f"model: Qwen2, {n_parameters(model):,} parameters, vocab {len(tokenizer)}; "
               f"warm start of {recipe.steps} steps")
    show.begin_steps()
    ws = warm_start(model, tokenizer, solutions, metas, lr=recipe.lr, batch_size=recipe.batch_size,
                    meta_every=recipe.meta_every, warmup_steps=recipe.warmup_steps,
                    final_lr_ratio=recipe.final_lr_ratio, steps=recipe.steps, seed=recipe.seed,
                    micro_batches=recipe.micro_batches, on_step=show.step)
    show.end_steps()
    show.phase(f"warm start done in {ws.seconds:.0f}s (loss {ws.final_loss:.3f}); probing "
               f"{recipe.n_probe} prompts x {recipe.probe_samples} samples at T=1")
    t = time.perf_counter()
    final = _probe(model, tokenizer, recipe, train[: recipe.n_probe], length_range)
    probe_s = time.perf_counter() - t
    show.phase(f"probe: pass rate {final.pass_rate:.3f}, mixed {final.mixed_fraction:.2f}, "
               f"meta parse {final.meta_parse_rate:.2f}; saving")
    _save_model(model, tokenizer, out / "model")
    summary = WarmStartSummary(
        steps=ws.steps, seconds=round(ws.seconds, 2), final_loss=round(ws.final_loss, 4),
        probe_pass_rate=final.pass_rate, probe_mixed_fraction=final.mixed_fraction,
        probe_meta_parse_rate=final.meta_parse_rate, meta_length_range=length_range,
        probe_seconds=round(probe_s, 2))
    info = {"recipe": recipe.to_dict(), "recipe_hash": key, "n_parameters": n_parameters(model),
            "warm_start": dataclasses.asdict(summary), "build_seconds": round(time.perf_counter() - start, 2),
            "build_cpu_seconds": round(time.process_time() - cpu_start, 2),
            # where bit-equality is promised: the same torch build on the same kind of CPU kernels
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": mkl_cnr()}
    if info["mkl_cbwr"] not in ("AUTO,STRICT", "no MKL"):
        # MKL was at work in this process before masa set its mode (or the user chose another): the
        # weights may differ in the last bits from another build of this recipe
        print(f"[masa.toy] warning: MKL_CBWR is {info['mkl_cbwr']}, not AUTO,STRICT: this build's bytes may "
              "differ from another build of the recipe (build it with `masa toy build`)", file=sys.stderr)
    (out / "artifacts.json").write_text(json.dumps(info, indent=2) + "\n")
    _log(progress, f"built in {info['build_seconds']:.0f}s ({info['build_cpu_seconds']:.0f}s CPU)")


def _problems(recipe: ToyRecipe):
    """The recipe's train and held-out splits, and its extra warm-start problems (`n_warm_extra`)."""
    draw = (lambda rng: random_chain(rng, max_ops=recipe.max_ops, max_digits=recipe.max_digits)) \
        if recipe.task == "chain" else None
    train, heldout = task.generate_splits(recipe.n_train, recipe.n_heldout, seed=recipe.seed,
                                          max_digits=recipe.max_digits, max_mul_digits=recipe.max_mul_digits,
                                          draw=draw)
    # the extra problems' stream is seeded apart from the splits' (seed + 3: +1, +2 are _tokenize's)
    extra = task.extra_problems(recipe.n_warm_extra, seed=recipe.seed + 3, exclude=train + heldout,
                                max_digits=recipe.max_digits, max_mul_digits=recipe.max_mul_digits)
    return train, heldout, extra


def _new_model(recipe: ToyRecipe, tokenizer):
    """The recipe's randomly initialised model for `tokenizer` (before the warm start)."""
    return make_model(vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, n_layers=recipe.n_layers,
                      head_dim=recipe.head_dim, intermediate_size=recipe.intermediate_size,
                      max_position_embeddings=recipe.max_model_len, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, seed=recipe.seed)


def _probe(model, tokenizer, recipe: ToyRecipe, problems, length_range: tuple[int, int]):
    """Sampled solution pass rate and meta parse rate of the built model (figures, not a gate)."""
    meta_parser, meta_prompt = _meta_fns(recipe)
    # a little past the longest reference solution: a sample still going there is wrong anyway, and
    # running wrong samples to the full budget would dominate the probe's time
    max_new = min(recipe.max_response_tokens, length_range[1] + 16)
    stats = probe(model, tokenizer, problems, n=recipe.probe_samples, max_new_tokens=max_new,
                  seed=recipe.seed + recipe.steps, step=recipe.steps)
    meta = meta_parse_rate(model, tokenizer, [meta_prompt(p.question) for p in problems], n=recipe.probe_samples,
                           max_new_tokens=max_new, seed=recipe.seed + recipe.steps + 1, parses=meta_parser)
    return dataclasses.replace(stats, meta_parse_rate=meta)


def _meta_fns(recipe: ToyRecipe):
    def meta_parser(text: str) -> bool:
        parsed = parse_meta(text, n_solution=recipe.n_solution, max_response_tokens=recipe.max_response_tokens)
        return isinstance(parsed, MetaPrediction)

    def meta_prompt(question: str) -> str:
        return render_meta_prompt(question, n_solution=recipe.n_solution,
                                  max_response_tokens=recipe.max_response_tokens)

    return meta_parser, meta_prompt


# The meta completion's fixed strings (masa.algo.meta's canonical form: `<meta>...</meta>` then
# {"math_notion": [...], "pass_rate": k, "solution_length": n}), one token each with `key_tokens`
META_KEY_TOKENS = (META_OPEN, META_CLOSE, *(f'"{k}": ' for k in KEYS))


def _tokenize(recipe: ToyRecipe, train, extra=()):
    """Train the tokenizer on the train split's corpus, then encode solution and (random-valued) meta
    examples of the train split and the `extra` warm-start problems."""
    _, meta_prompt = _meta_fns(recipe)
    prompts = [meta_prompt(p.question) for p in train]
    # A few meta completions teach the BPE the JSON's punctuation; their values need not vary,
    # since digits are always single tokens.
    rng = random.Random(recipe.seed + 1)
    # the wrong turns draw from their own stream, so that the recipes without them draw what they always drew
    wander = random.Random(recipe.seed + 2)
    texts = [(recipe.wander and task.wandering(p, wander, rate=recipe.wander)) or p.solution for p in train]
    corpus = [t for p, mp, text in zip(train, prompts, texts, strict=True) for t in (p.question, text, mp, p.reasoning)]
    tokenizer = train_tokenizer(corpus + [format_meta_completion("", notions=p.notions, pass_rate=0,
                                                                 solution_length=1) for p in train[:64]],
                                vocab_size=recipe.vocab_size, added=META_KEY_TOKENS if recipe.key_tokens else ())
    # the extras after the train split, so that every draw for the train split is what it was without them
    n_split = len(train)
    train = [*train, *extra]
    prompts += [meta_prompt(p.question) for p in extra]
    texts += [(recipe.wander and task.wandering(p, wander, rate=recipe.wander)) or p.solution for p in extra]
    solutions = [encode(tokenizer, p.question, f"{p.analysis}\n{text}" if recipe.solution_analysis else text)
                 for p, text in zip(train, texts, strict=True)]
    # incl. eos, as the rollouts count; of the train split's correct solutions only: the range a meta
    # example's random length is drawn from, and the probe's budget, are a correct solution's of the
    # prompts the run trains on, wrong turns or not
    lengths = sorted(len(e.ids) - e.n_prompt for e, p, text in zip(solutions[:n_split], train[:n_split],
                                                                      texts[:n_split], strict=True)
                     if text == p.solution)
    length_range = (lengths[0], min(lengths[-1], recipe.max_response_tokens))
    metas = [
        encode(tokenizer, mp, format_meta_completion(
            _meta_reasoning(p, recipe.meta_reasoning), notions=p.notions,
            pass_rate=rng.randint(0, recipe.n_solution),
            solution_length=rng.randint(*length_range)))
        for p, mp in zip(train, prompts, strict=True)
    ]
    return tokenizer, solutions, metas, length_range


def _meta_reasoning(p, style: str) -> str:
    """The reasoning line of a warm-start meta example (ToyRecipe.meta_reasoning)."""
    if style == "none":
        return ""
    return p.short_reasoning if style == "short" else p.reasoning


def _save_model(model, tokenizer, path: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    # transformers draws a "Writing model shards" bar for the one shard of a 0.2M-parameter model: it
    # would break the build's own progress lines on the terminal
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(path, safe_serialization=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(path)
