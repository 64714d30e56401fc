"""Bounded runs (docs/deploy.md, "Bounded runs"): whatever the rounds, every run a preset compiles to
holds at most MAX_TASKS_PER_RUN tasks, counted in the compiled IR itself (every DAG, nested ones
included), and the segments cover every round once, in order."""

import pytest
import yaml

from masa.config import MAX_TASKS_PER_RUN, PRESETS, ConfigError, load_config, run_tasks
from masa.pipeline.compile import compile_pipeline, distinct_segments, segment_paths

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: a paper run's IR parses in 0.1 s, not 0.6


def ir_tasks(path) -> int:
    spec = next(yaml.load_all(path.read_text(), LOADER))
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return sum(len(d.get("tasks", {})) for d in dags)


def display_names(path) -> list[str]:
    spec = next(yaml.load_all(path.read_text(), LOADER))
    return [t["taskInfo"]["name"] for t in spec["root"]["dag"]["tasks"].values()]


# the paper preset as shipped, 3 branches' worth of tasks (a stand-in for a 3-branch compare: GRPO
# beside MASA at 2 branches, and compare=false), and the local presets
CASES = [(p, []) for p in PRESETS] + [("paper", ["compare=false"]), ("paper", ["rounds=200"]),
                                      ("paper", ["resources.rollout_shards=4"]), ("toy", ["resources.rollout_shards=2"]),
                                      ("paper", ["resources.benchmark_shards=4"]),
                                      ("toy", ["resources.rollout_shards=2", "resources.benchmark_shards=2"])]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """`compiled(preset, overrides, i)`: run i's IR, compiled once per module (the paper's serve two tests)."""
    done = {}

    def get(preset: str, overrides: tuple[str, ...], i: int):
        if (preset, overrides, i) not in done:
            cfg = load_config(preset, list(overrides))
            paths = segment_paths(cfg, tmp_path_factory.mktemp("ir") / "p.yaml")
            done[preset, overrides, i] = compile_pipeline(cfg, paths[i], i)
        return done[preset, overrides, i]
    return get


@pytest.mark.parametrize(("preset", "overrides"), CASES)
def test_every_run_of_a_preset_compiles_to_at_most_40_tasks(preset, overrides, compiled):
    cfg = load_config(preset, overrides)
    assert [r for seg in cfg.segments for r in seg] == list(range(cfg.rounds))
    n = len(cfg.segments)
    counts = [run_tasks(len(cfg.branches), len(s), first=i == 0, last=i == n - 1,
                        per_round=cfg.tasks_per_round, per_benchmark=cfg.tasks_per_benchmark)
              for i, s in enumerate(cfg.segments)]
    assert max(counts) <= MAX_TASKS_PER_RUN, (preset, counts)
    # the IR of each distinct shape (first, middle, last two) holds exactly the tasks counted; the runs
    # in between have the middle one's rounds, so its count (compiling 105 paper runs takes minutes)
    for i in distinct_segments(cfg):
        assert ir_tasks(compiled(preset, tuple(overrides), i)) == counts[i], (preset, i)
    assert all(counts[i] == counts[1] for i in range(1, len(counts) - 1) if len(cfg.segments[i]) == len(cfg.segments[1]))


def test_paper_runs_keep_rollout_score_train_visible_and_resume_later_segments(compiled):
    cfg = load_config("paper")
    # 314 rounds, 3 branches: 3 per run (38 tasks), the last run the remaining 2
    assert len(cfg.segments) == 105 and [len(s) for s in cfg.segments] == [3] * 104 + [2]
    names = display_names(compiled("paper", (), 1))
    assert {f"{b} · resume after round 3" for b in cfg.branches} <= set(names)
    for r in range(4, 7):
        for part in ("rollout", "score", "train"):
            assert f"masa-efficient · round {r} · {part}" in names
    assert not any(n.startswith("benchmark") or n == "report" for n in names)  # only the last run reports
    assert {"benchmark · base", "benchmark · grpo", "benchmark · masa", "benchmark · baseline-masa",
            "report"} <= set(display_names(compiled("paper", (), len(cfg.segments) - 1)))


def test_three_branches_fit_too():
    # 3 branches (grpo, masa, masa-efficient): 3 + 3 resumes + 9K + 3 benchmarks, base, promote, report <= 40: K = 3
    assert run_tasks(3, 3, first=False, last=True) == 39 <= MAX_TASKS_PER_RUN < run_tasks(3, 4, first=False, last=True)


def test_rounds_per_run_too_large_is_an_error_naming_the_key():
    # two branches, 6 rounds in a middle run: 3 + 2 resumes + 3 x 6 x 2 = 41
    with pytest.raises(ConfigError, match=r"resources\.rounds_per_run.*41 tasks"):
        load_config("paper", ["baselines=[grpo]", "resources.rounds_per_run=6"])


def test_resume_before_the_previous_round_finished_names_the_round(tmp_path):
    from masa.steps.resume import resume_step

    cfg = load_config("smoke", [f"store={tmp_path / 'store'}", "resources.rounds_per_run=1"])
    with pytest.raises(FileNotFoundError, match=r"grpo round 1 has not finished .*segment that ends with round 1"):
        resume_step(cfg, branch="grpo", round_idx=1, policy_ptr=str(tmp_path / "p"), history_out=str(tmp_path / "h"))


def test_schedule_refuses_a_configuration_of_several_runs():
    from masa.pipeline.compile import schedule

    with pytest.raises(ValueError, match="needs 105"):
        schedule(load_config("paper"), host="http://127.0.0.1:9", cron="0 0 3 * * *", experiment="x")


def test_submit_follow_creates_each_run_after_the_previous_succeeded():
    # against the KFP API STAND-IN (tests/kfp_standin.py): what the client sends, not what a cluster does
    from masa.pipeline.compile import submit
    from tests.kfp_standin import KfpStandIn

    cfg = load_config("smoke", ["resources.rounds_per_run=1"])
    with KfpStandIn() as kfp:
        ids = submit(cfg, host=kfp.host, experiment="masa-tests", follow=True)
    assert len(ids) == 2
    calls = [(m, p.split("?")[0]) for m, p, _ in kfp.requests if "/runs" in p]
    created = [i for i, (m, p) in enumerate(calls) if m == "POST"]
    waited = [i for i, (m, p) in enumerate(calls) if m == "GET" and p == "/apis/v2beta1/runs/run-standin"]
    assert len(created) == 2 and waited and created[0] < waited[0] < created[1]  # run 2 only after run 1 ended
    names = [b["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] for m, p, b in kfp.requests
             if m == "POST" and p.startswith("/apis/v2beta1/runs")]
    assert names == ["masa-smoke-part1of2", "masa-smoke-part2of2"]


def test_a_missing_rollout_shard_is_named_not_merged(tmp_path):
    # the merge refuses a round whose shards are not exactly 0..N-1 (a shard lost to a retry that never
    # ran would otherwise train on part of the round), naming what it got
    from masa.runner.layout import Pointer, write_pointer
    from masa.steps.rollout import merge_rollouts_step

    cfg = load_config("smoke", [f"store={tmp_path / 'store'}", "resources.rollout_shards=2"])
    write_pointer(tmp_path / "s1.json", Pointer(store=cfg.store, prefix="x", kind="rollouts", shard=1))
    with pytest.raises(ValueError, match=r"grpo round 1: got shards \[1\], expected 0\.\.1"):
        merge_rollouts_step(cfg, branch="grpo", round_idx=0, shard_ptrs=[str(tmp_path / "s1.json")],
                            out_ptr=str(tmp_path / "out.json"))


def test_resume_points_at_the_serving_trainjob_while_the_last_model_uploads(tmp_path):
    """A serving TrainJob outlives a run (docs/deploy.md): the previous run's last model may still be
    uploading when the next run starts; its train step's sealed stats name the job and the identity, and
    the resume step's pointer carries them, so this run's steps take the model over from the job."""
    import json

    from masa.runner.layout import HISTORY, read_pointer, run_layout, train_stats_key
    from masa.steps.resume import resume_step
    from masa.storage import open_store, put_dir_atomic

    cfg = load_config("smoke", [f"store={tmp_path / 'store'}", "resources.rounds_per_run=1"])
    layout, store = run_layout(cfg), open_store(cfg.store)
    prefix, hist = layout.part("grpo", 0, "checkpoint"), layout.part("grpo", 0, "history")
    held = {"job": "trainer-r-grpo", "namespace": "masa", "port": 29600, "key_uri": "s3://b/r/grpo/trainer.key"}
    for key, body in ((f"{hist}/{HISTORY}", []), (train_stats_key(prefix), {"identity": "d" * 64, "held_by": held})):
        src = tmp_path / key.replace("/", "_")
        src.mkdir()
        (src / key.rsplit("/", 1)[1]).write_text(json.dumps(body))
        put_dir_atomic(store, str(src), key.rsplit("/", 1)[0])
    store.put_bytes(f"{prefix}/config.json", b"{}")  # the model's upload has begun, no manifest yet
    stats = resume_step(cfg, branch="grpo", round_idx=1, policy_ptr=str(tmp_path / "p"), history_out=str(tmp_path / "h"))
    ptr = read_pointer(tmp_path / "p")
    assert (ptr.prefix, ptr.round, ptr.digest, ptr.held_by.job) == (prefix, 0, "d" * 64, "trainer-r-grpo")
    assert stats == {"rounds_done": 0, "from_trainer": 1}
    # once the upload is complete the store's copy is the policy: no job in the pointer
    src = tmp_path / "model"
    src.mkdir()
    (src / "config.json").write_text("{}")
    put_dir_atomic(store, str(src), prefix)
    resume_step(cfg, branch="grpo", round_idx=1, policy_ptr=str(tmp_path / "p2"), history_out=str(tmp_path / "h2"))
    assert read_pointer(tmp_path / "p2").held_by is None and read_pointer(tmp_path / "p2").digest is None


def test_the_state_reaches_the_store_every_nth_run_and_at_the_trainings_end():
    """`resources.state_every_runs`: with a serving trainer and `train_state: run`, a run's last round
    uploads its state in the background only every Nth run; the training's last round always does. The
    smoke preset with rounds=7, rounds_per_run=2 has runs [0,1] [2,3] [4,5] [6]: with N = 2 the state of
    round 3 (second run's last) and round 6 (the training's last) goes up, the rest stay in the service."""
    from masa.steps.train import state_mode

    base = ["rounds=7", "resources.rounds_per_run=2", "resources.train_state=run"]
    every2 = load_config("smoke", [*base, "resources.state_every_runs=2"])
    assert [list(s) for s in every2.segments] == [[0, 1], [2, 3], [4, 5], [6]]
    assert [state_mode(every2, r) for r in range(7)] == ["keep", "keep", "keep", "background", "keep", "keep",
                                                         "background"]
    every1 = load_config("smoke", base)
    assert [state_mode(every1, r) for r in range(7)] == ["keep", "background"] * 3 + ["background"]
    assert state_mode(load_config("smoke", ["rounds=7", "resources.rounds_per_run=2"]), 3) == "publish"
    with pytest.raises(ConfigError, match="state_every_runs"):
        load_config("smoke", [*base, "resources.state_every_runs=0"])
