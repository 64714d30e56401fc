"""The run configuration: one frozen dataclass per concern, composed into `RunConfig`.

Presets are YAML files (`masa/presets/*.yaml`: `toy`, `smoke`, `paper`, `paper-1.7b`) or a user's file; `--set
key.sub=value` overrides apply on top. Every problem is reported at once, naming the key, before
anything runs (`masa.configbase.ConfigError`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from masa.algo.config import AlgorithmConfig
from masa.algo.prompts import RELEASED_INSTRUCTION
from masa.clusterconfig import ImagesConfig, ResourcesConfig
from masa.configbase import ConfigError, check, from_dict, raise_if
from masa.train.config import TrainConfig

PRESETS = ("toy", "smoke", "paper", "paper-1.7b")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class DataConfig:
    """Where problems come from and how they are filtered (see `masa.data.filter`)."""

    train: str = "toy"  # .parquet / .jsonl path, s3:// URI, HF dataset id, or "toy" (embedded task)
    heldout: str | None = "toy"  # held-out split measured each round; None = none
    split: str = "train"  # split of an HF dataset id
    max_prompts: int | None = None  # keep at most this many after filtering (None = all)
    max_prompt_tokens: int = 1024
    near_dup_n: int = 5
    near_dup_threshold: float = 0.8
    overlap_n: int = 8
    # share of a training problem's word 8-grams found in a benchmark; 0.5 also drops MATH's
    # template siblings of test problems (11% of MATH train), 0.8 the near-copies (1.8%)
    overlap_threshold: float = 0.8
    heldout_size: int = 64  # held-out problems measured per round (drawn from the benchmark's first max_problems)
    # samples per problem of that per-round check; None = benchmark.k. The check times the speedups
    # ("MASA reaches GRPO's final accuracy"), so its noise is theirs; between-problem variance dominates
    # it, so more problems at fewer samples buy more precision per sample (masa/presets/toy.yaml)
    heldout_k: int | None = None
    # check every Nth round's policy (rounds 0, N, 2N, ...; the final checkpoint is the benchmark's), as
    # verl's test_freq: each check is a generation pass over heldout_size problems (toy: 1.6-2.7 s, ~15%
    # of a run's pipeline when every round checks)
    heldout_every: int = 1
    # appended to every problem (" " + sentence) in rollouts, the benchmark, the meta prompt and the
    # filter's length check; None = the paper code's sentence for a real model, none for the toy
    # (masa.algo.prompts; `RunConfig.solution_instruction` resolves it); "" = the bare problem
    solution_instruction: str | None = None
    # the training data's snapshot fingerprint (content hash, S3 ETag or hub revision), set by the configure
    # step of each run (masa.data.snapshot), so new data behind the same URI is a new run (docs/promotion.md)
    snapshot: str = ""

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.max_prompts is None or self.max_prompts >= 1, "max_prompts", "must be >= 1 or null", p)
        check(self.max_prompt_tokens >= 8, "max_prompt_tokens", "must be >= 8", p)
        check(0 < self.near_dup_threshold <= 1, "near_dup_threshold", "must be in (0, 1]", p)
        check(0 < self.overlap_threshold <= 1, "overlap_threshold", "must be in (0, 1]", p)
        check(self.near_dup_n >= 1 and self.overlap_n >= 1, "near_dup_n/overlap_n", "must be >= 1", p)
        check(self.heldout_size >= 1, "heldout_size", "must be >= 1", p)
        check(self.heldout_k is None or self.heldout_k >= 1, "heldout_k", "must be >= 1 or null (= benchmark.k)", p)
        check(self.heldout_every >= 1, "heldout_every", "must be >= 1", p)
        raise_if(p)

    def checks(self, round_idx: int) -> bool:
        """Whether the rollout step of round `round_idx` (0-based) measures its policy on the held-out check."""
        return self.heldout is not None and round_idx % self.heldout_every == 0


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling and engine settings of the rollout step."""

    backend: Literal["auto", "vllm", "transformers"] = "auto"  # auto: vLLM wherever it is installed
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_response_tokens: int = 512
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gpu_memory_utilization: float = 0.2
    # GPUs per engine; the step's GPUs (resources.rollout_gpus / benchmark_gpus) hold GPUs / this many
    # engine replicas (`engine_parallelism`). 0 = one engine over all of the step's GPUs. A model that
    # fits one GPU is faster as replicas (tensor_parallel_size: 1) than as one TP-8 engine.
    tensor_parallel_size: int = 0
    # how a GPU engine reads the checkpoint (vLLM's `load_format`): `fastsafetensors` copies whole
    # files to the GPU and builds the tensors there, where the default deserializes tensor by tensor
    # in host memory: Llama-2-13b's weights into one A100 in 16.04 -> 6.88 s (vllm-project/vllm#10647;
    # bench/paper_cost_model.py).
    # A machine without GPUs always loads the default way (`masa.engines.for_this_host`)
    load_format: Literal["auto", "fastsafetensors"] = "auto"
    # engines of a rollout or benchmark step on a machine without GPUs (`masa run` on a laptop): vLLM's
    # CPU engine runs its scheduler in one Python thread, so one engine keeps about one core busy; N
    # engines share the step's requests (the samples do not depend on N) and the cores
    cpu_engines: int = 1

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.temperature > 0, "temperature", "must be > 0", p)
        check(self.cpu_engines >= 1, "cpu_engines", "must be >= 1", p)
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", p)
        check(self.top_k == -1 or self.top_k >= 1, "top_k", "must be -1 (off) or >= 1", p)
        check(self.max_response_tokens >= 1, "max_response_tokens", "must be >= 1", p)
        check(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]", p)
        check(self.tensor_parallel_size >= 0, "tensor_parallel_size", "must be >= 0 (0 = all the step's GPUs)", p)
        raise_if(p)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Evaluation of the base and trained checkpoints (avg@k, pass@k, meta-awareness)."""

    datasets: tuple[str, ...] = ("toy",)  # verl parquet / JSONL paths, HF ids, or "toy" (held-out split)
    k: int = 4
    # meta predictions sampled per problem; None = k. The pass-rate MAE is a mean over problems x meta
    # samples and its standard error runs over problems, so fewer samples per problem cost little of
    # its precision, while a meta sample (its prompt and JSON) costs about as much as a solution
    meta_k: int | None = None
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 512
    max_problems: int | None = None

    def __post_init__(self) -> None:
        p: list[str] = []
        check(len(self.datasets) >= 1, "datasets", "needs at least one benchmark", p)
        check(self.k >= 1, "k", "must be >= 1", p)
        check(self.meta_k is None or self.meta_k >= 1, "meta_k", "must be >= 1 or null (= k)", p)
        check(self.temperature > 0, "temperature", "must be > 0", p)
        check(self.max_tokens >= 1, "max_tokens", "must be >= 1", p)
        raise_if(p)


@dataclass(frozen=True)
class PromotionConfig:
    """The promote step and scheduled retraining (docs/promotion.md)."""

    model_name: str = ""  # the registry entry <store>/models/<name>/; "" = the run's name
    # the benchmarked checkpoint that is the candidate: "" = the final checkpoint of algorithm.name's branch
    # (the MASA branch, or GRPO's in a GRPO-only run), "masa", "grpo" or "base" (`RunConfig.candidate`)
    candidate: str = ""
    margin: float | None = None  # accuracy gain the candidate must exceed; None = z x stderr of the difference
    z: float = 1.96
    # False: a run whose training data has the snapshot the promoted model was trained on reuses the last
    # run's parts and records "unchanged-data"; True: every scheduled run (KFP run id) trains afresh
    retrain_if_data_unchanged: bool = False

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.candidate in ("", "masa", "grpo", "base"), "candidate", "must be masa, grpo, base or empty", p)
        check(self.margin is None or self.margin >= 0, "margin", "must be >= 0 or null", p)
        check(self.z > 0, "z", "must be > 0", p)
        check(not self.model_name or self.model_name.replace("-", "").replace("_", "").replace(".", "").isalnum(),
              "model_name", "letters, digits, '.', '_' and '-' only", p)
        raise_if(p)


# Tasks of one submitted run. KFP's backend turns a run into one Argo Workflow object stored in etcd
# (1.5 MiB request limit); kubeflow/pipelines#13738 shows a flat 56-task pipeline rejected with
# "etcdserver: request is too large". 40 keeps a margin (bench/paper_cost_model.py, the size model).
MAX_TASKS_PER_RUN = 40


def run_tasks(branches: int, rounds: int, *, first: bool, last: bool, per_round: int = 3, fixed: int = 3,
              per_benchmark: int = 1) -> int:
    """Tasks of a run covering `rounds` rounds: `fixed` = configure, prepare, data filter (and stage, with
    `resources.stage_inputs`); per branch one
    hand-over (`resume`) unless it is the first run, `per_round` per round (rollout, score, train: 3;
    with rollout shards 5, the ParallelFor and its task plus the merge); in the last run the base and
    per-branch benchmarks (`per_benchmark` each: 1, or with benchmark shards 3, the ParallelFor, its
    task and the merge), the promote step and the report."""
    benchmarks = (branches + 1) * per_benchmark + 2 if last else 0
    return fixed + (0 if first else branches) + per_round * rounds * branches + benchmarks


def auto_rounds_per_run(branches: int, rounds: int, per_round: int = 3, fixed: int = 3, per_benchmark: int = 1) -> int:
    """All rounds in one run when that fits MAX_TASKS_PER_RUN, else the most a middle-or-last run
    (hand-overs, benchmarks and report) can hold."""
    shape = dict(per_round=per_round, fixed=fixed, per_benchmark=per_benchmark)
    if run_tasks(branches, rounds, first=True, last=True, **shape) <= MAX_TASKS_PER_RUN:
        return rounds
    overhead = run_tasks(branches, 0, first=False, last=True, fixed=fixed, per_benchmark=per_benchmark)
    return max(1, (MAX_TASKS_PER_RUN - overhead) // (per_round * branches))


@dataclass(frozen=True)
class EngineParallelism:
    """How a rollout or benchmark step uses its GPUs: `replicas` engines of `tensor_parallel_size` GPUs."""

    tensor_parallel_size: int
    replicas: int


def engine_parallelism(cfg: RunConfig, step: Literal["rollout", "benchmark"]) -> EngineParallelism:
    """The one place engine parallelism comes from: the step's GPUs (`resources.<step>_gpus`, at least
    one engine on CPU) split into engines of `rollout.tensor_parallel_size` GPUs (0 = all of them).
    RunConfig refuses a size that would leave GPUs idle."""
    gpus = max(getattr(cfg.resources, f"{step}_gpus"), 1)
    tp = cfg.rollout.tensor_parallel_size or gpus
    return EngineParallelism(tensor_parallel_size=tp, replicas=gpus // tp)


# TrainConfig fields that masa.runner.settings.train_settings derives for each branch and round (the key of
# RunConfig to set instead, or None): a preset or --set that sets one is refused rather than overwritten
DERIVED_TRAIN_FIELDS = {
    "seed": "seed", "temperature": None, "bc_coef": "algorithm.expert.bc_coef", "bc_mode": "algorithm.expert.mode",
    "bc_phase_batch": "algorithm.expert.phase_batch", "bc_phase_steps": "algorithm.expert.phase_steps",
    "bc_phase_lr": "algorithm.expert.phase_lr", "bc_phase_anchor": "algorithm.expert.phase_anchor",
    "bc_phase_moments": "algorithm.expert.phase_moments",
}


@dataclass(frozen=True)
class RunConfig:
    name: str = "masa"
    model: str = "toy"  # local dir, s3:// URI, HF id, or "toy" (built locally)
    toy_recipe: Literal["toy", "smoke", "chain", "terse", "analysed", "reasoned", "wandering", "broad",
                        "wandering-broad"] = "toy"
    # the toy build's seed (its data, tokenizer corpus, initialisation, batch order): another seed is
    # another toy model and task draw, built and cached apart (bench/bench_toy_seeds.py varies it)
    toy_seed: int = 0
    compare: bool = True  # also train the `baselines` from the same base, data and seeds
    # algorithms trained beside algorithm.name when comparing, first to last; the paper's accuracy claims
    # are for plain MASA and its efficiency claims for MASA-efficient, so the paper presets run
    # [grpo, masa] beside masa-efficient (three branches)
    baselines: tuple[Literal["grpo", "masa", "masa-efficient"], ...] = ("grpo",)
    rounds: int = 4
    prompts_per_round: int = 32
    seed: int = 0
    train_processes: int = 2  # DeepSpeed ranks per train step (GPUs per node on a cluster)
    store: str = ""  # artifact store URI (local dir or s3://bucket/prefix); "" = <out>/store
    data: DataConfig = field(default_factory=DataConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    promotion: PromotionConfig = field(default_factory=PromotionConfig)
    # the KFP run of a scheduled run (set by its configure step when promotion.retrain_if_data_unchanged):
    # part of the run's identity, so each scheduled run retrains; a retry of that run keeps it and resumes
    run_tag: str = ""

    def __post_init__(self) -> None:
        p: list[str] = []
        check(bool(self.name) and self.name.replace("-", "").isalnum(), "name",
              "must be non-empty letters, digits and dashes", p)
        check(self.rounds >= 1, "rounds", "must be >= 1", p)
        check(self.toy_seed >= 0, "toy_seed", "must be >= 0", p)
        check(self.prompts_per_round >= 1, "prompts_per_round", "must be >= 1", p)
        check(self.train_processes >= 1, "train_processes", "must be >= 1", p)
        gpus = self.resources.train_gpus
        # one DeepSpeed rank per GPU: a second rank on a 1-GPU pod asks for cuda:1 and fails
        check(gpus == 0 or self.train_processes == gpus, "train_processes",
              f"must equal resources.train_gpus ({gpus}): one rank per GPU (or set train_gpus: 0 for CPU ranks)", p)
        # "" is a store not given yet (the paper presets'): `masa preflight`/`submit` require one
        check(not self.resources.train_service or not self.store or self.store.startswith("s3://"),
              "resources.train_service", f"needs an s3:// store that the TrainJob's nodes can reach; store is "
              f"{self.store!r}", p)
        check(not (self.compare and self.algorithm.name == "grpo"), "compare",
              "compare runs GRPO beside algorithm.name; set algorithm.name to masa or masa-efficient", p)
        check(not self.compare or (self.baselines[:1] == ("grpo",) and self.algorithm.name not in self.baselines
                                   and len(set(self.baselines)) == len(self.baselines)), "baselines",
              "must start with grpo, hold no algorithm twice, and not repeat algorithm.name", p)
        check(self.rollout.max_response_tokens >= self.algorithm.cutoff.min_tokens, "rollout.max_response_tokens",
              "must be >= algorithm.cutoff.min_tokens", p)
        for step in ("rollout", "benchmark"):  # every GPU a step requests is used (engine_parallelism)
            gpus, tp = max(getattr(self.resources, f"{step}_gpus"), 1), self.rollout.tensor_parallel_size
            check(tp <= gpus, "rollout.tensor_parallel_size",
                  f"{tp} GPUs per engine, but resources.{step}_gpus gives the step {gpus}", p)
            check(tp > gpus or gpus % max(tp, 1) == 0, "rollout.tensor_parallel_size",
                  f"{tp} does not divide resources.{step}_gpus={gpus}: {gpus % max(tp, 1)} GPUs would stay "
                  f"idle; use a divisor of {gpus}, or 0 for one engine on all of them", p)
        worst = max((run_tasks(len(self.branches), len(seg), first=i == 0, last=i == len(self.segments) - 1,
                               per_round=self.tasks_per_round, fixed=self.fixed_tasks,
                               per_benchmark=self.tasks_per_benchmark)
                    for i, seg in enumerate(self.segments)), default=0)
        check(worst <= MAX_TASKS_PER_RUN, "resources.rounds_per_run",
              f"gives a run of {worst} tasks, above {MAX_TASKS_PER_RUN}; use 0 (automatic) or fewer rounds", p)
        check(self.promotion.candidate != "grpo" or "grpo" in self.branches, "promotion.candidate",
              "grpo needs compare: true (the GRPO branch is trained only when comparing)", p)
        check(self.promotion.candidate != "masa" or self.algorithm.name != "grpo", "promotion.candidate",
              "masa needs algorithm.name masa or masa-efficient (this run trains GRPO only: use grpo or base)", p)
        defaults = TrainConfig()
        for key, source in DERIVED_TRAIN_FIELDS.items():  # set per branch and round, never by hand
            check(getattr(self.train, key) == getattr(defaults, key), f"train.{key}",
                  "derived per branch and round (masa.runner.settings.train_settings): "
                  + (f"set {source} instead" if source else "always 1, the engines' raw log-probs"), p)
        samples = self.train.samples_per_step
        if samples is not None:
            check(samples % self.algorithm.n_solution == 0, "train.samples_per_step",
                  f"must be a multiple of algorithm.n_solution (G={self.algorithm.n_solution})", p)
        raise_if(p)

    @property
    def toy_name(self) -> str:
        """The toy's recipe name and, when not the default 0, its seed: part of the base model's and
        the benchmarks' fingerprints, so runs on another toy seed never reuse this one's parts."""
        return self.toy_recipe if self.toy_seed == 0 else f"{self.toy_recipe}@seed{self.toy_seed}"

    @property
    def solution_instruction(self) -> str:
        """The instruction appended to each problem (`data.solution_instruction`, None resolved)."""
        if self.data.solution_instruction is not None:
            return self.data.solution_instruction
        return "" if self.model == "toy" else RELEASED_INSTRUCTION

    @property
    def branches(self) -> tuple[str, ...]:
        """Algorithms trained by this run, GRPO first when comparing."""
        return (*self.baselines, self.algorithm.name) if self.compare else (self.algorithm.name,)

    @property
    def candidate(self) -> str:
        """The benchmark key whose checkpoint the promote step offers: `promotion.candidate`, else the run's
        own algorithm ("masa" for masa / masa-efficient, "grpo" in a GRPO-only run)."""
        return self.promotion.candidate or ("grpo" if self.algorithm.name == "grpo" else "masa")

    @property
    def tasks_per_round(self) -> int:
        """Tasks of one round and branch in the compiled DAG (see `run_tasks`)."""
        return 3 if self.resources.rollout_shards == 1 else 5

    @property
    def tasks_per_benchmark(self) -> int:
        """Tasks of one checkpoint's benchmark (see `run_tasks`)."""
        return 1 if self.resources.benchmark_shards == 1 else 3

    @property
    def fixed_tasks(self) -> int:
        """Tasks every run has once: configure, prepare, data filter, and stage (`resources.stage_inputs`)."""
        return 4 if self.resources.stage_inputs else 3

    @property
    def segments(self) -> tuple[range, ...]:
        """The rounds of each submitted run, in order (one run unless the DAG would exceed
        MAX_TASKS_PER_RUN tasks; docs/deploy.md, "Bounded runs")."""
        k = self.resources.rounds_per_run or auto_rounds_per_run(len(self.branches), self.rounds, self.tasks_per_round,
                                                                 self.fixed_tasks, self.tasks_per_benchmark)
        return tuple(range(s, min(s + k, self.rounds)) for s in range(0, self.rounds, max(k, 1)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` → (["a", "b", "c"], YAML-typed value)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"{item}: overrides look like key.sub=value"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError([f"{key}: cannot parse value {raw!r}: {yaml_reason(e)}"]) from None
    if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string; users mean the number
        try:
            value = float(value) if _FLOAT.fullmatch(value.strip()) else value
        except ValueError:
            pass
    return key.strip().split("."), value


def yaml_reason(e: yaml.YAMLError) -> str:
    """PyYAML's error on one line: the problem and where (its own text runs to ten lines, with the
    source line and a caret twice over)."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem is None or mark is None:
        return " ".join(str(e).split())
    context, at = getattr(e, "context", None), getattr(e, "context_mark", None)
    opened = f" ({context} at line {at.line + 1}, column {at.column + 1})" if context and at else ""
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}{opened}"


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError([f"{'.'.join(path)}: {part} is not a section"])
    node[path[-1]] = value


def preset_dict(preset: str) -> dict[str, Any]:
    """The raw mapping of a built-in preset name or a YAML file path."""
    if preset in PRESETS:
        text = resources.files("masa.presets").joinpath(f"{preset}.yaml").read_text()
    else:
        path = Path(preset)
        if not path.is_file():
            raise ConfigError([f"preset: {preset!r} is neither a built-in preset ({', '.join(PRESETS)}) nor a file"])
        text = path.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"preset {preset}: not valid YAML: {yaml_reason(e)}"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"preset {preset}: top level must be a mapping"])
    return data


def load_config(preset: str = "toy", overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    data = copy.deepcopy(preset_dict(preset))
    for item in overrides:
        path, value = parse_override(item)
        _apply(data, path, value)
    return from_dict(RunConfig, data)


def config_from_json(text: str) -> RunConfig:
    return from_dict(RunConfig, json.loads(text))


# Pipeline parameters shown in the Kubeflow UI → config keys. Structural settings (rounds, compare,
# algorithm) are fixed when the pipeline is compiled, since the rounds are unrolled into the DAG.
UI_PARAMETERS = {
    "model": "model",
    "train_data": "data.train",
    "store": "store",
    "prompts_per_round": "prompts_per_round",
    "n_solution": "algorithm.n_solution",
    "n_meta": "algorithm.n_meta",
    "learning_rate": "train.lr",
    "temperature": "rollout.temperature",
    "max_response_tokens": "rollout.max_response_tokens",
    "seed": "seed",
    # a JSON list in the UI: the checkpoints are benchmarked on these without a recompile
    "benchmark_datasets": "benchmark.datasets",
}


def ui_defaults(cfg: RunConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    out = {}
    for name, key in UI_PARAMETERS.items():
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out[name] = list(node) if isinstance(node, tuple) else node  # KFP's list parameters take JSON lists
    return out


def apply_parameters(config_json: str, **params: Any) -> str:
    """The compiled config with UI parameters applied, validated; returns canonical JSON."""
    data = json.loads(config_json)
    unknown = set(params) - set(UI_PARAMETERS)
    if unknown:
        raise ConfigError([f"{k}: unknown pipeline parameter" for k in sorted(unknown)])
    for name, value in params.items():
        _apply(data, UI_PARAMETERS[name].split("."), value)
    return from_dict(RunConfig, data).to_json()
