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

import masa
from masa.algo.config import AlgorithmConfig
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
    heldout_size: int = 64  # held-out problems measured per round
    # appended to every problem (" " + sentence) in rollouts, the benchmark, the meta prompt and the
    # filter's length check; None = the paper code's sentence for a real model, none for the toy
    # (masa.algo.prompts; `RunConfig.solution_instruction` resolves it); "" = the bare problem
    solution_instruction: str | None = None

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.max_prompts is None or self.max_prompts >= 1, "max_prompts", "must be >= 1 or null", p)
        check(self.max_prompt_tokens >= 8, "max_prompt_tokens", "must be >= 8", p)
        check(0 < self.near_dup_threshold <= 1, "near_dup_threshold", "must be in (0, 1]", p)
        check(0 < self.overlap_threshold <= 1, "overlap_threshold", "must be in (0, 1]", p)
        check(self.near_dup_n >= 1 and self.overlap_n >= 1, "near_dup_n/overlap_n", "must be >= 1", p)
        check(self.heldout_size >= 1, "heldout_size", "must be >= 1", p)
        raise_if(p)


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
    tensor_parallel_size: int = 1

    def __post_init__(self) -> None:
        p: list[str] = []
        check(self.temperature > 0, "temperature", "must be > 0", p)
        check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]", p)
        check(self.top_k == -1 or self.top_k >= 1, "top_k", "must be -1 (off) or >= 1", p)
        check(self.max_response_tokens >= 1, "max_response_tokens", "must be >= 1", p)
        check(0 < self.gpu_memory_utilization <= 1, "gpu_memory_utilization", "must be in (0, 1]", p)
        check(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1", p)
        raise_if(p)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Evaluation of the base and trained checkpoints (avg@k, pass@k, meta-awareness)."""

    datasets: tuple[str, ...] = ("toy",)  # verl parquet / JSONL paths, HF ids, or "toy" (held-out split)
    k: int = 4
    temperature: float = 0.6
    top_p: float = 1.0
    max_tokens: int = 512
    max_problems: int | None = None

    def __post_init__(self) -> None:
        p: list[str] = []
        check(len(self.datasets) >= 1, "datasets", "needs at least one benchmark", p)
        check(self.k >= 1, "k", "must be >= 1", p)
        check(self.temperature > 0, "temperature", "must be > 0", p)
        check(self.max_tokens >= 1, "max_tokens", "must be >= 1", p)
        raise_if(p)


@dataclass(frozen=True)
class ResourcesConfig:
    """Kubernetes resources per step (ignored by the local runner)."""

    accelerator_type: str = "nvidia.com/gpu"
    rollout_gpus: int = 1
    train_gpus: int = 1
    benchmark_gpus: int = 1
    train_nodes: int = 1  # > 1: the train step creates a Kubeflow Trainer TrainJob
    cpu_request: str = "2"
    memory_request: str = "8Gi"
    retries: int = 2
    metrics_port: int = 9090  # Prometheus endpoint of long-running steps (0 = off); images expose 9090
    service_account: str = "masa-pipeline"  # manifests/rbac.yaml: may create TrainJobs, read one Secret
    s3_secret: str = "masa-s3-credentials"  # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MASA_S3_ENDPOINT_URL

    def __post_init__(self) -> None:
        p: list[str] = []
        for k in ("rollout_gpus", "train_gpus", "benchmark_gpus", "retries"):
            check(getattr(self, k) >= 0, k, "must be >= 0", p)
        check(self.train_nodes >= 1, "train_nodes", "must be >= 1", p)
        raise_if(p)


_REGISTRY = "ghcr.io/owner"  # placeholder, as in images/build.sh (MASA_IMAGE_REGISTRY)


@dataclass(frozen=True)
class ImagesConfig:
    """Images of the steps, tagged with the package version by images/build.sh."""

    cpu: str = f"{_REGISTRY}/masa-pipeline-cpu:{masa.__version__}"
    vllm: str = f"{_REGISTRY}/masa-pipeline-vllm:{masa.__version__}"
    deepspeed: str = f"{_REGISTRY}/masa-pipeline-deepspeed:{masa.__version__}"


@dataclass(frozen=True)
class RunConfig:
    name: str = "masa"
    model: str = "toy"  # local dir, s3:// URI, HF id, or "toy" (built locally)
    toy_recipe: Literal["toy", "smoke"] = "toy"
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

    def __post_init__(self) -> None:
        p: list[str] = []
        check(bool(self.name) and self.name.replace("-", "").isalnum(), "name",
              "must be non-empty letters, digits and dashes", p)
        check(self.rounds >= 1, "rounds", "must be >= 1", p)
        check(self.prompts_per_round >= 1, "prompts_per_round", "must be >= 1", p)
        check(self.train_processes >= 1, "train_processes", "must be >= 1", p)
        check(not (self.compare and self.algorithm.name == "grpo"), "compare",
              "compare runs GRPO beside algorithm.name; set algorithm.name to masa or masa-efficient", p)
        check(not self.compare or (self.baselines[:1] == ("grpo",) and self.algorithm.name not in self.baselines
                                   and len(set(self.baselines)) == len(self.baselines)), "baselines",
              "must start with grpo, hold no algorithm twice, and not repeat algorithm.name", p)
        check(self.rollout.max_response_tokens >= self.algorithm.cutoff.min_tokens, "rollout.max_response_tokens",
              "must be >= algorithm.cutoff.min_tokens", p)
        samples = self.train.samples_per_step
        if samples is not None:
            check(samples % self.algorithm.n_solution == 0, "train.samples_per_step",
                  f"must be a multiple of algorithm.n_solution (G={self.algorithm.n_solution})", p)
        raise_if(p)

    @property
    def solution_instruction(self) -> str:
        """The instruction appended to each problem (`data.solution_instruction`, None resolved)."""
        from masa.algo.prompts import RELEASED_INSTRUCTION

        if self.data.solution_instruction is not None:
            return self.data.solution_instruction
        return "" if self.model == "toy" else RELEASED_INSTRUCTION

    @property
    def branches(self) -> tuple[str, ...]:
        """Algorithms trained by this run, GRPO first when comparing."""
        return (*self.baselines, self.algorithm.name) if self.compare else (self.algorithm.name,)

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
        raise ConfigError([f"{key}: cannot parse value {raw!r}: {e}"]) from None
    if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string; users mean the number
        try:
            value = float(value) if _FLOAT.fullmatch(value.strip()) else value
        except ValueError:
            pass
    return key.strip().split("."), value


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
        raise ConfigError([f"preset {preset}: not valid YAML: {e}"]) from None
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
}


def ui_defaults(cfg: RunConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    out = {}
    for name, key in UI_PARAMETERS.items():
        node: Any = data
        for part in key.split("."):
            node = node[part]
        out[name] = node
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
