"""Bounded runs (docs/deploy.md, "Bounded runs"): whatever the rounds, every run a preset compiles to
holds at most MAX_TASKS_PER_RUN tasks, counted in the compiled IR itself (every DAG, nested ones
included), and the segments cover every round once, in order."""

import pytest
import yaml

from masa.config import MAX_TASKS_PER_RUN, PRESETS, ConfigError, load_config, run_tasks
from masa.pipeline.compile import compile_pipeline, segment_paths


def ir_tasks(path) -> int:
    spec = next(yaml.safe_load_all(path.read_text()))
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return sum(len(d.get("tasks", {})) for d in dags)


def display_names(path) -> list[str]:
    spec = next(yaml.safe_load_all(path.read_text()))
    return [t["taskInfo"]["name"] for t in spec["root"]["dag"]["tasks"].values()]


# the paper preset as shipped, 3 branches' worth of tasks (a stand-in for a 3-branch compare: GRPO
# beside MASA at 2 branches, and compare=false), and the local presets
CASES = [(p, []) for p in PRESETS] + [("paper", ["compare=false"]), ("paper", ["rounds=200"])]


@pytest.mark.parametrize(("preset", "overrides"), CASES)
def test_every_run_of_a_preset_compiles_to_at_most_40_tasks(preset, overrides, tmp_path):
    cfg = load_config(preset, overrides)
    assert [r for seg in cfg.segments for r in seg] == list(range(cfg.rounds))
    paths = segment_paths(cfg, tmp_path / "p.yaml")
    for i, path in enumerate(paths):
        compile_pipeline(cfg, path, i)
        n = ir_tasks(path)
        assert n <= MAX_TASKS_PER_RUN, (preset, i, n)
        assert n == run_tasks(len(cfg.branches), len(cfg.segments[i]), first=i == 0, last=i == len(paths) - 1)


def test_paper_runs_keep_rollout_score_train_visible_and_resume_later_segments(tmp_path):
    cfg = load_config("paper")
    assert len(cfg.segments) == 10 and all(len(s) == 5 for s in cfg.segments)  # 50 rounds, 2 branches: 5 per run
    paths = segment_paths(cfg, tmp_path / "paper.yaml")
    compile_pipeline(cfg, paths[1], 1)
    names = display_names(paths[1])
    assert "grpo · resume after round 5" in names and "masa-efficient · resume after round 5" in names
    for r in range(6, 11):
        for part in ("rollout", "score", "train"):
            assert f"masa-efficient · round {r} · {part}" in names
    assert not any(n.startswith("benchmark") or n == "report" for n in names)  # only the last run reports
    compile_pipeline(cfg, paths[-1], len(paths) - 1)
    assert {"benchmark · base", "benchmark · grpo", "benchmark · masa", "report"} <= set(display_names(paths[-1]))


def test_three_branches_fit_too():
    # 3 branches (grpo, masa, masa-efficient): 5 + 2*3 + 9K <= 40 gives K = 3
    assert run_tasks(3, 3, first=False, last=True) == 38 <= MAX_TASKS_PER_RUN < run_tasks(3, 4, first=False, last=True)


def test_rounds_per_run_too_large_is_an_error_naming_the_key():
    # 6 rounds in a middle run: 3 + 2 resumes + 3 x 6 x 2 = 41
    with pytest.raises(ConfigError, match=r"resources\.rounds_per_run.*41 tasks"):
        load_config("paper", ["resources.rounds_per_run=6"])
