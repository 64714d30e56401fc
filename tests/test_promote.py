"""Scheduled retraining and promotion (issue 17 sections 0-1): the data snapshot and run identity, the
promote step's decisions on a local store and on SeaweedFS, and the compiled recurring run."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest
import yaml

from masa.config import load_config
from masa.data.snapshot import data_snapshot
from masa.runner.layout import run_layout
from masa.steps.configure import stamp
from masa.steps.prepare import filter_data, prepare_base
from masa.steps.promote import eval_key, promote_step
from masa.storage import open_store, put_dir_atomic
from masa.storage.registry import read_latest, read_record, resolve_ref

ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(1, 9)]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _cfg(store, data, *more):
    return load_config("toy", [f"store={store}", f"data.train={data}", "data.heldout=null", "compare=false",
                               "promotion.model_name=m", *more])


# ---- section 0: a scheduled run retrains on new data; a retry resumes ----

def test_second_scheduled_run_on_changed_data_retrains(tmp_path, tiny_model_dir):
    data, store = tmp_path / "train.jsonl", str(tmp_path / "store")
    _write_jsonl(data, ROWS[:4])
    cfg = _cfg(store, data, f"model={tiny_model_dir}")
    first = stamp(cfg, run_tag="job-1")
    out = tmp_path / "out1"
    assert not prepare_base(first, model_out=str(out / "base.json"))["reused"]
    kept1 = filter_data(first, base_model=str(out / "base.json"), prompts_out=str(out / "p"),
                        heldout_out=str(out / "h"), report_out=str(out / "r.md"))["kept"]
    # a retry of the same run (same stamp) reuses what it finished
    assert prepare_base(stamp(cfg, run_tag="job-1"), model_out=str(out / "base.json"))["reused"]
    # new content behind the same URI: a new snapshot, so a new run identity, and every part is new
    _write_jsonl(data, ROWS)
    second = stamp(cfg, run_tag="job-2")
    assert second.data.snapshot != first.data.snapshot and second.data.snapshot.startswith("sha256:")
    assert run_layout(second).run_id != run_layout(first).run_id
    out2 = tmp_path / "out2"
    assert not prepare_base(second, model_out=str(out2 / "base.json"))["reused"]
    kept2 = filter_data(second, base_model=str(out2 / "base.json"), prompts_out=str(out2 / "p"),
                        heldout_out=str(out2 / "h"), report_out=str(out2 / "r.md"))["kept"]
    assert (kept1, kept2) == (4, 8)  # the second run trains on the new rows


def test_unchanged_data_is_the_same_run_unless_retraining_is_asked(tmp_path):
    data = tmp_path / "train.jsonl"
    _write_jsonl(data, ROWS)
    cfg = _cfg(str(tmp_path / "s"), data)
    # default (retrain_if_data_unchanged: false): two scheduled runs on unchanged data are one identity,
    # so the second reuses every part, and its promote step records "unchanged-data"
    assert run_layout(stamp(cfg, run_tag="job-1")).run_id == run_layout(stamp(cfg, run_tag="job-2")).run_id
    again = dataclasses.replace(cfg, promotion=dataclasses.replace(cfg.promotion, retrain_if_data_unchanged=True))
    a, b = stamp(again, run_tag="job-1"), stamp(again, run_tag="job-2")
    assert run_layout(a).run_id != run_layout(b).run_id  # each KFP run is its own run
    assert run_layout(a).run_id == run_layout(stamp(again, run_tag="job-1")).run_id  # its retry resumes


def test_s3_data_snapshot_follows_the_object(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    s3_server.make_bucket("data")
    store, key = open_store("s3://data/sets"), f"train-{uuid.uuid4().hex[:6]}.jsonl"
    store.put_bytes(key, b'{"problem": "1+1?", "answer": "2"}\n')
    uri = f"s3://data/sets/{key}"
    one = data_snapshot(uri)
    assert one.startswith("etag:") and data_snapshot(uri) == one
    store.put_bytes(key, b'{"problem": "1+2?", "answer": "3"}\n')
    assert data_snapshot(uri) != one
    assert data_snapshot("toy") == "toy"


# ---- section 1: the promote step on both stores ----

def _candidate(tmp_path, store_uri, tag: str, accuracy: float, mae: float, *, se=0.01):
    """A trained checkpoint in the store (a part, as the train step leaves it) and its benchmark results."""
    d = tmp_path / f"ckpt-{tag}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2", "tag": tag}))
    (d / "model.safetensors").write_bytes(tag.encode() * 64)
    prefix = f"run-{tag}/masa/round-003/model"
    put_dir_atomic(open_store(store_uri), str(d), prefix)
    ptr, res = tmp_path / f"{tag}.ptr", tmp_path / f"{tag}.json"
    ptr.write_text(json.dumps({"store": store_uri, "prefix": prefix, "name": "masa"}))
    res.write_text(json.dumps({"uri": f"{store_uri}/{prefix}", "benchmarks": {"toy": {
        "accuracy": accuracy, "accuracy_stderr": se, "k": 4, "n_problems": 64,
        "meta": {"pass_rate_mae": mae, "pass_rate_mae_stderr": 0.01, "pass_rate_mae_constant": 0.25,
                 "spearman": 0.5}}}}))
    return str(ptr), str(res)


def _promote(cfg, tmp_path, tag, ptr_res):
    out = tmp_path / f"promotion-{tag}" / "record.json"
    out.parent.mkdir()
    promote_step(cfg, candidate_ptr=ptr_res[0], candidate_eval=ptr_res[1], out_path=str(out))
    return json.loads(out.read_text())


def test_promote_step_moves_the_pointer_only_for_a_better_candidate(store_uri, tmp_path):
    cfg = load_config("toy", [f"store={store_uri}", "promotion.model_name=m", "data.snapshot=sha256:aaaa"])
    store = open_store(store_uri)
    first = _promote(cfg, tmp_path, "one", _candidate(tmp_path, store_uri, "one", 0.40, 0.20))
    assert first["decision"] == "first" and first["current"] is None
    v1 = first["version"]
    assert read_latest(store, "m")[0].version == v1
    card = store.get_bytes(f"models/m/{v1}/README.md").decode()
    assert "sha256:aaaa" in card and "0.4000 ± 0.0196" in card and run_layout(cfg).run_id in card
    assert "| the constant's MAE |" in card and "| 0.250 | 0.500 |" in card  # beside the meta MAE, then Spearman
    assert read_record(store, "m", v1)["eval_key"] == eval_key(cfg)

    cfg2 = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, snapshot="sha256:bbbb"))
    # equal, and better by less than the noise (1.96 * sqrt(2) * 0.01 = 0.0277): rejected, pointer stays
    for tag, acc in (("equal", 0.40), ("within-noise", 0.42), ("worse", 0.30)):
        rec = _promote(cfg2, tmp_path, tag, _candidate(tmp_path, store_uri, tag, acc, 0.20))
        assert rec["decision"] == "rejected" and rec["version"] is None, rec
        assert rec["current"]["accuracy"] == pytest.approx(0.40) and rec["margin"] == pytest.approx(0.0277, abs=1e-4)
        assert read_latest(store, "m")[0].version == v1
    # better accuracy but worse calibration: rejected with the reason
    rec = _promote(cfg2, tmp_path, "miscal", _candidate(tmp_path, store_uri, "miscal", 0.60, 0.40))
    assert rec["decision"] == "rejected" and "meta-awareness got worse" in rec["reason"]
    # better beyond the noise: promoted, and latest:m resolves to it
    rec = _promote(cfg2, tmp_path, "two", _candidate(tmp_path, store_uri, "two", 0.50, 0.19))
    assert rec["decision"] == "promoted" and rec["version"] != v1
    assert resolve_ref("latest:m", store_uri).endswith(rec["version"])
    assert read_latest(store, "m")[0].history == (v1, rec["version"])
    # the same data again (default: retrain_if_data_unchanged false): nothing changed, nothing promoted
    same = _promote(cfg2, tmp_path, "same", _candidate(tmp_path, store_uri, "same", 0.90, 0.01))
    assert same["decision"] == "unchanged-data" and read_latest(store, "m")[0].version == rec["version"]
    assert set(same) == {"decision", "reason", "model_name", "version", "candidate", "current", "margin"}
    # each decision also stays in the store beside the run, sealed by a manifest
    kept = json.loads(store.get_bytes(f"{run_layout(cfg2).run_id}/promotion/promotion.json"))
    assert kept == same


# ---- the compiled recurring run ----

def test_schedule_compiles_promote_step_and_latest_model(tmp_path):
    from masa.cli import main

    out = tmp_path / "sched.yaml"
    rc = main(["schedule", "--preset", "smoke", "--cron", "0 0 3 * * *", "--store", "s3://b/p",
               "--image-registry", "reg.example", "--set", "model=latest:smoke-model",
               "--set", "promotion.model_name=smoke-model", "--dry-run", str(out)])
    assert rc == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    tasks = spec["root"]["dag"]["tasks"]
    assert spec["root"]["inputDefinitions"]["parameters"]["model"]["defaultValue"] == "latest:smoke-model"
    prom = tasks["promote"]
    assert prom["cachingOptions"].get("enableCache", False) is False
    assert tasks["configure"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["configure"]["inputs"]["parameters"]["run_tag"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert {"benchmark-2"} <= set(prom["dependentTasks"])  # the MASA branch's benchmark
    assert tasks["report"]["inputs"]["artifacts"]["promotion"]["taskOutputArtifact"]["producerTask"] == "promote"


def test_stale_current_figures_are_measured_again_on_this_runs_benchmarks(tmp_path, tiny_model_dir):
    """The current model's recorded figures came from other settings: the promote step benchmarks it
    (real engine, the tiny model) with this run's benchmarks, k and seeds, and records them beside it."""
    from masa.storage.registry import promote, publish

    bench = tmp_path / "bench.jsonl"
    _write_jsonl(bench, ROWS[:2])
    store_uri = str(tmp_path / "store")
    cfg = load_config("toy", [f"store={store_uri}", "promotion.model_name=m", "data.snapshot=sha256:new",
                              f"benchmark.datasets=[{bench}]", "benchmark.k=1", "benchmark.max_tokens=8",
                              "rollout.backend=transformers", "rollout.dtype=float32"])
    store = open_store(store_uri)
    old = publish(store, "m", str(tiny_model_dir), {"data_snapshot": "sha256:old", "eval_key": "other-settings"})
    promote(store, "m", old)
    # a candidate at accuracy 0 cannot gain over anything: rejected, after the current one was measured
    rec = _promote(cfg, tmp_path, "low", _candidate(tmp_path, store_uri, "low", 0.0, 0.2, se=0.0))
    assert rec["decision"] == "rejected" and 0 <= rec["current"]["accuracy"] <= 1
    assert eval_key(cfg) in read_record(store, "m", old)["evals"]  # recorded: the next run reuses it


def test_promote_component_runs_under_kfp_local(tmp_path):
    """The component as KFP runs it (kfp.local, a subprocess): typed inputs, the record artifact, metadata."""
    from kfp import dsl, local

    from masa.components import build

    store_uri = str(tmp_path / "store")
    cfg = load_config("toy", [f"store={store_uri}", "promotion.model_name=kfp", "data.snapshot=sha256:x"])
    ptr, res = _candidate(tmp_path, store_uri, "kfp", 0.5, 0.2)
    c = build(cfg.images)

    @dsl.pipeline
    def only_promote():
        cand = dsl.importer(artifact_uri=ptr, artifact_class=dsl.Model, reimport=True)
        ev = dsl.importer(artifact_uri=res, artifact_class=dsl.Artifact, reimport=True)
        c.promote(config_json=cfg.to_json(), candidate=cand.output, candidate_eval=ev.output)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    only_promote()
    (record,) = (tmp_path / "kfp").glob("*/promote/promotion")
    rec = json.loads(record.read_text())
    assert rec["decision"] == "first" and read_latest(open_store(store_uri), "kfp")[0].version == rec["version"]
