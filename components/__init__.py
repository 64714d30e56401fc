"""KFP components: one per pipeline step, thin (typed inputs → one `masa.steps` call → artifacts).

Installed as `masa.components`. Each module defines the component's Python function; `build(images)`
wraps them with `dsl.component` on the configured images, so one compiled pipeline names the CPU,
vLLM and DeepSpeed images of its run. The functions import `masa` inside their bodies: KFP ships
only the function's source to the container.
"""

from __future__ import annotations

from types import SimpleNamespace

from masa.components.benchmark import benchmark
from masa.components.benchmark_shard import benchmark_shard
from masa.components.configure import configure
from masa.components.data_filter import data_filter
from masa.components.merge_benchmarks import merge_benchmarks
from masa.components.merge_rollouts import merge_rollouts
from masa.components.prepare import prepare
from masa.components.promote import promote
from masa.components.report import report
from masa.components.resume import resume
from masa.components.rollout import rollout
from masa.components.score import score
from masa.components.stage import stage
from masa.components.train import train

# which image family runs each step
IMAGE_OF = {
    "configure": "cpu", "stage": "cpu", "prepare": "cpu", "data_filter": "cpu", "resume": "cpu", "merge_rollouts": "cpu", "merge_benchmarks": "cpu", "score": "cpu", "report": "cpu",
    "rollout": "vllm", "benchmark": "vllm", "benchmark_shard": "vllm", "promote": "vllm", "train": "deepspeed",
}
FUNCTIONS = {f.__name__: f for f in (configure, stage, prepare, data_filter, resume, rollout, merge_rollouts, score, train, benchmark,
                                        benchmark_shard, merge_benchmarks,
                                        promote, report)}


def build(images) -> SimpleNamespace:
    """KFP components on the images of an `ImagesConfig` (`cpu`, `vllm`, `deepspeed`)."""
    from kfp import dsl

    return SimpleNamespace(**{
        name: dsl.component(fn, base_image=getattr(images, IMAGE_OF[name]), install_kfp_package=False)
        for name, fn in FUNCTIONS.items()
    })
