"""The Kubeflow UI parameters are declared once (`masa.config.UI_PARAMETERS`): the pipeline function's
signature, the `configure` component's and `apply_parameters` must all take exactly those names, and the
compiled defaults must be the configuration's values, so a new parameter cannot be half added."""

from __future__ import annotations

import inspect

from masa.components import build
from masa.config import UI_PARAMETERS, apply_parameters, config_from_json, load_config, ui_defaults
from masa.pipeline.dag import build_pipeline


def _params(fn) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(fn).parameters)


def test_dag_and_configure_take_exactly_the_declared_parameters():
    cfg = load_config("smoke")
    dag = _params(build_pipeline(cfg).pipeline_func)
    assert list(dag) == list(UI_PARAMETERS)
    assert {k: p.default for k, p in dag.items()} == ui_defaults(cfg)  # defaults from the configuration
    configure = _params(build(cfg.images).configure.python_func)
    # besides the UI parameters: the compiled configuration, and the KFP run id that `masa schedule` passes
    # (a placeholder, not a user setting; masa.steps.configure)
    assert list(configure) == ["config_json", *UI_PARAMETERS, "run_tag"]
    # same types in both signatures, and each the type of the configuration's value
    for name, value in ui_defaults(cfg).items():
        assert dag[name].annotation == configure[name].annotation, name
        assert dag[name].annotation in (type(value).__name__, type(value)), (name, dag[name].annotation, value)


def test_apply_parameters_sets_each_declared_key():
    cfg = load_config("smoke")
    applied = config_from_json(apply_parameters(cfg.to_json(), **{**ui_defaults(cfg), "seed": 17,
                                                                   "prompts_per_round": 3}))
    assert (applied.seed, applied.prompts_per_round) == (17, 3)
    assert ui_defaults(applied) == {**ui_defaults(cfg), "seed": 17, "prompts_per_round": 3}


def test_benchmark_datasets_are_a_list_parameter_set_without_a_recompile(tmp_path):
    # issue 19 item 3: the benchmarks a run evaluates are chosen in the UI (a JSON list), not compiled in
    import yaml

    from masa.pipeline.compile import compile_pipeline

    cfg = load_config("smoke")
    spec = next(yaml.safe_load_all(compile_pipeline(cfg, tmp_path / "p.yaml").read_text()))
    param = spec["root"]["inputDefinitions"]["parameters"]["benchmark_datasets"]
    assert param["parameterType"] == "LIST" and param["defaultValue"] == list(cfg.benchmark.datasets)
    chosen = ["s3://b/bench/math500.parquet", "s3://b/bench/aime24.parquet"]
    applied = config_from_json(apply_parameters(cfg.to_json(), **{**ui_defaults(cfg), "benchmark_datasets": chosen}))
    assert list(applied.benchmark.datasets) == chosen
