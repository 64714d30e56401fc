"""The `smoke` DAG end to end with kfp.local's SubprocessRunner: local store, rerun reuse, report keys,
report.html in headless Chromium. The same DAG against a real SeaweedFS S3 server is tests/test_s3_run.py's
(every artifact of both branches, the report's checkpoint URIs, no secret in the log)."""

import json
import shutil
from pathlib import Path

import pytest
from report_layout import chromium, screenshot

from masa.config import load_config
from masa.pipeline.local import run_local

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    # the trainer services keep round 0's training state and upload the run's last round's in the
    # background (masa.train.service); the cold run below publishes every round's: the same rows
    cfg = load_config("smoke", ["resources.train_state=run"])
    result = run_local(cfg, out)
    return cfg, out, result


def test_smoke_report_has_every_key(smoke):
    cfg, out, result = smoke
    report = json.loads(Path(result["report_json"]).read_text())
    for ck in ("base", "grpo", "masa"):
        b = report["eval"][ck]["toy"]
        assert {"accuracy", "pass_at_k", "k", "n_problems"} <= set(b)
        assert b["k"] == cfg.benchmark.k and b["n_problems"] > 0 and 0 <= b["accuracy"] <= 1
        assert set(b["pass_at_k"]) == {"1", "2"}
        assert {"pass_rate_mae", "spearman", "length_in_range", "notion"} <= set(b["meta"])
    for algo in ("grpo", "masa"):
        rows = report["rounds"][algo]
        assert [r["round"] for r in rows] == list(range(cfg.rounds))
        for r in rows:
            assert {"train_accuracy", "heldout_accuracy", "rollout_tokens", "wall_s", "gated_prompts",
                    "cutoff_samples"} <= set(r) and "pass_rate_mae" in r["meta"]
            assert r["rollout_tokens"] > 0
    assert report["rounds"]["masa"][0]["meta"]["parse_rate"] is not None  # MASA samples the meta path
    assert report["rounds"]["grpo"][0]["meta"]["pass_rate_mae"] is None  # GRPO does not
    assert {"speedup_tokens", "speedup_wall", "tokens_saved_gating", "tokens_saved_cutoff"} <= set(report["efficiency"])
    # the curves end on the rounds' held-out check problems: the base model's final point, read from its
    # benchmark's per-problem counts, is what round 1's check measured of the same policy (same problems,
    # same per-problem seeds, other batches)
    assert {k: p["basis"] for k, p in report["final_points"].items()} == dict.fromkeys(("base", "grpo", "masa"),
                                                                                     "heldout-check")
    assert report["final_points"]["base"]["accuracy"] == pytest.approx(report["rounds"]["grpo"][0]["heldout_accuracy"])
    assert report["efficiency"]["final_accuracy_basis"] == "heldout-check"
    t = report["timing"]
    assert t["total_s"] > 0 and t["overhead_s"] >= 0
    # per step kind: every round part, every benchmark and the report; the kinds add up to the whole
    assert {k: v["steps"] for k, v in t["by_kind"].items()} == {
        "rollout": 2 * cfg.rounds, "score": 2 * cfg.rounds, "train": 2 * cfg.rounds, "benchmark": 3, "report": 1}
    assert sum(v["compute_s"] for v in t["by_kind"].values()) == pytest.approx(t["compute_s"], abs=0.05)
    assert sum(v["compute_s"] + v["overhead_s"] for v in t["by_kind"].values()) == pytest.approx(t["total_s"], abs=0.05)
    for ck in ("base", "grpo", "masa"):
        ckpt = Path(report["checkpoints"][ck].removeprefix("file://"))
        assert (ckpt / "MANIFEST.json").is_file() and (ckpt / "config.json").is_file()


def test_every_dropped_row_and_the_store_layout(smoke):
    cfg, out, _ = smoke
    store = out / "store"
    (run_dir,) = [p for p in store.iterdir() if p.is_dir() and p.name != "models"]  # models/: the registry
    (version,) = [p for p in (store / "models" / cfg.name).iterdir() if p.is_dir() and p.name != "records"]
    assert (version / "MANIFEST.json").is_file() and (version / "README.md").is_file()  # promoted: the first
    for branch in cfg.branches:
        for r in range(cfg.rounds):
            for part in ("rollouts", "scored", "checkpoint"):
                assert (run_dir / branch / f"round-{r:03d}" / part / "MANIFEST.json").is_file(), (branch, r, part)


def test_second_run_reuses_finished_steps(smoke):
    cfg, out, result = smoke
    store = out / "store"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    again = run_local(cfg, out)
    log = Path(again["log"]).read_text()
    # every training and benchmark task of the second run is a cache hit: nothing recomputed. configure
    # (it measures the data snapshot) and promote (it reads the registry) run again by design; promote
    # records "unchanged-data" (<run>/promotion/), so only it and the report are rewritten (docs/promotion.md)
    assert log.count("cache hit") >= 3 + len(cfg.branches) * (3 * cfg.rounds + 1)
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    report_part = {p for p in after if {"report", "promotion"} & set(p.relative_to(store).parts)}
    assert {p: t for p, t in after.items() if p not in report_part} == \
        {p: t for p, t in before.items() if p not in report_part}
    promotion = json.loads(Path(again["report_json"]).read_text()).get("promotion")
    assert promotion is None or promotion["decision"] == "unchanged-data"  # None until the report renders it
    one, two = (json.loads(Path(x["report_json"]).read_text())["eval"] for x in (result, again))
    timing = ("wall_s", "samples_per_s", "tokens_per_s")
    assert {ck: {b: {k: v for k, v in r.items() if k not in timing} for b, r in e.items()} for ck, e in two.items()} == \
        {ck: {b: {k: v for k, v in r.items() if k not in timing} for b, r in e.items()} for ck, e in one.items()}


def test_report_html_layout_in_headless_chromium(smoke, tmp_path):
    # at 1280 px: nothing past the viewport, no overlapping text, every chart with a legend outside
    # its axes; the accuracy charts name both branches and GRPO's final accuracy
    if chromium() is None:
        pytest.skip("chromium not installed (Debian package `chromium`; .ci/run installs it)")
    from PIL import Image
    from test_report_charts import check_layout

    html = Path(smoke[2]["report_html"])
    got = check_layout(html, tmp_path)
    legends = {c["name"]: c["legend"] for c in got["charts"]}
    assert {"accuracy-tokens", "accuracy-wall", "meta-error", "train-accuracy", "calibration",
            "tokens-saved"} == set(legends)
    for name in ("accuracy-tokens", "accuracy-wall"):
        assert {"GRPO", "MASA"} <= set(legends[name]) and any(x.startswith("GRPO final accuracy") for x in legends[name])
    assert legends["train-accuracy"] == ["GRPO", "MASA"]  # smoke parses no meta prediction: no calibration points
    shot = tmp_path / "report.png"
    screenshot(html, tmp_path, shot)
    img = Image.open(shot).convert("RGB")
    colors = {"grpo": (0, 114, 178), "masa": (213, 94, 0)}  # the branches' colours (masa.runner.charts)
    counts = {name: 0 for name in colors}
    for px in img.getdata():
        for name, rgb in colors.items():
            if all(abs(a - b) <= 8 for a, b in zip(px, rgb, strict=True)):
                counts[name] += 1
    # series are drawn (hundreds of pixels, not just the legend swatches); GRPO's line may lie under
    # MASA's where their accuracies coincide, so only the total and the top series are required
    assert counts["masa"] > 200 and sum(counts.values()) > 400, counts


def test_two_runs_of_one_round_with_two_rollout_shards_give_the_one_run_figures_and_rows(smoke, tmp_path):
    # Three scale-out shapes and the process start at once, each checked against the one-run, one-pod,
    # warm DAG (same seeds, inputs):
    # - resources.rounds_per_run=1 cuts smoke's 2 rounds into 2 runs (docs/deploy.md, "Bounded runs"):
    #   the second starts from the checkpoint and history the first left in the store;
    # - resources.rollout_shards=2: each round's rollout is a ParallelFor of 2 tasks (kfp.local runs it)
    #   and a merge, on the real vLLM CPU engine; MASA-efficient's gating sees every prompt's meta
    #   samples in each shard.
    # - resources.benchmark_shards=2: each checkpoint's benchmark is a ParallelFor of 2 tasks over halves
    #   of the held-out problems and a merge (masa.runner.eval_shards): the report's figures must not move.
    # - and the process start: the smoke run forks its steps from the warm server (masa.pipeline.warm,
    #   the default), this one starts each in a fresh interpreter (`masa run --cold`).
    # One run covers all four (a run per shape cost a whole smoke run each): a difference in any shows
    # as a difference in the rows or figures below. It trains MASA-efficient alone (compare=false): its
    # rows are the comparing run's, and a cold GRPO branch would add ~100 s to the suite for no path
    # that MASA-efficient's does not take.
    cfg, out, result = smoke
    split = load_config("smoke", ["resources.rounds_per_run=1", "resources.rollout_shards=2",
                                  "resources.benchmark_shards=2", "compare=false"])
    assert [list(s) for s in split.segments] == [[0], [1]] and split.branches == (cfg.branches[-1],)
    again = run_local(split, tmp_path / "out", warm=False)
    assert result["warm_tasks"] >= 12 and again["warm_tasks"] == 0  # at least 2 branches x 2 rounds x 3 steps
    for branch in split.branches:
        for r in range(cfg.rounds):
            got, want = _rollout_rows(tmp_path / "out", branch, r), _rollout_rows(out, branch, r)
            # every field, token ids included, is equal; log-probs to float32 rounding (a different batch
            # shape on CPU moved them by up to ~1e-6 when measured, 2026-12-01)
            assert [{k: v for k, v in x.items() if k != "logprobs"} for x in got] == \
                [{k: v for k, v in x.items() if k != "logprobs"} for x in want], (branch, r)
            assert [lp for x in got for lp in x["logprobs"]] == \
                pytest.approx([lp for x in want for lp in x["logprobs"]], abs=1e-5), (branch, r)
    # the warm run's round 1 continued from the engine its trainer service held (masa.train.service);
    # the cold run's loaded round 0's published state: the same rows above either way
    for where, how in ((out, "service:"), (tmp_path / "out", "init_state_dir:")):
        for branch in split.branches:
            rows = _train_rows(where, branch, 1)
            assert rows and all(r["restored_from"].startswith(how) for r in rows), (where, branch)
    (run_dir,) = [p for p in (tmp_path / "out" / "store").iterdir() if p.is_dir() and p.name != "models"]
    for k in (0, 1):  # both shards were generated and published on their own
        assert (run_dir / "masa-efficient" / "round-001" / f"rollouts-shard-{k}" / "MANIFEST.json").is_file()

    one, two = (json.loads(Path(x["report_json"]).read_text()) for x in (result, again))
    def figures(report):  # what was measured, not where or how long
        return {ck: {b: {k: v for k, v in r.items() if not k.endswith("_s") and k not in ("source", "uri", "shards")}
                     for b, r in e.items()}
                for ck, e in report["eval"].items()}

    assert figures(two) == {ck: e for ck, e in figures(one).items() if ck != "grpo"}
    keys = ("round", "train_accuracy", "heldout_accuracy", "rollout_tokens", "gated_prompts")
    assert [{k: r[k] for k in keys} for r in two["rounds"]["masa"]] == \
        [{k: r[k] for k in keys} for r in one["rounds"]["masa"]]
    # strict UTF-8: this sharded run's log once held 2 KB of heap bytes, written by two ParallelFor
    # threads at once (cpython#118138; the tee now serializes them, tests/test_progress_phases.py)
    assert "resume" in Path(again["log"]).read_text()


def _train_rows(out, branch, r):
    (run_dir,) = [p for p in (out / "store").iterdir() if p.is_dir() and p.name != "models"]
    f = run_dir / branch / f"round-{r:03d}" / "checkpoint" / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x.strip()]


def _rollout_rows(out, branch, r):
    import pyarrow.parquet as pq

    (run_dir,) = [p for p in (out / "store").iterdir() if p.is_dir() and p.name != "models"]
    return pq.read_table(run_dir / branch / f"round-{r:03d}" / "rollouts" / "rollouts.parquet").to_pylist()


def test_a_rerun_retrains_the_state_a_gone_trainer_service_kept(smoke):
    """Round 0's state lived only in the first run's trainer services. A new `masa run` that must
    train round 1 again (its stats removed, KFP's cache off) has the new service retrain round 0 from
    the stored inputs first: the same weights, so the same figures. Last in this module: it rewrites
    the smoke run's round-1 checkpoints."""
    cfg, out, result = smoke
    (run_dir,) = [p for p in (out / "store").iterdir() if p.is_dir() and p.name != "models"]
    for branch in cfg.branches:
        assert json.loads((run_dir / branch / "round-000" / "checkpoint" / "train_state.json").read_text())["state"] == "keep"
        assert not (run_dir / branch / "round-000" / "checkpoint" / "train_state").exists()
        assert (run_dir / branch / "round-001" / "checkpoint" / "train_state" / "MANIFEST.json").is_file()
        shutil.rmtree(run_dir / branch / "round-001" / "checkpoint-stats")
    again = run_local(cfg, out, kfp_cache=False)
    log = Path(again["log"]).read_text()
    assert log.count("retrained it (the same weights)") == len(cfg.branches), log[-3000:]
    one, two = (json.loads(Path(x["report_json"]).read_text())["eval"] for x in (result, again))
    timing = ("wall_s", "samples_per_s", "tokens_per_s")
    assert {ck: {b: {k: v for k, v in r.items() if k not in timing} for b, r in e.items()} for ck, e in two.items()} == \
        {ck: {b: {k: v for k, v in r.items() if k not in timing} for b, r in e.items()} for ck, e in one.items()}
