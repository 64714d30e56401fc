"""Scheduled retraining: each run's identity from its configuration, its data snapshot and its KFP run.

A run's parts live under `<name>-<config fingerprint>` (masa.steps.prepare.run_layout) and are reused by
`run_once` and KFP's cache when their inputs match. The configure step stamps the configuration with
the training data's snapshot (masa.data.snapshot), so new data behind the same URI is a new identity and
every step downstream, whose inputs include the configuration, is new too. With
`promotion.retrain_if_data_unchanged` it also stamps the KFP run id (`run_tag`), so every scheduled run
trains afresh; a retry of that run keeps its id and resumes. Otherwise a run on unchanged data and
settings is the previous run: it reuses every part and its promote step records "unchanged-data".
"""

from __future__ import annotations

import dataclasses

from masa.config import RunConfig, config_from_json
from masa.data.snapshot import data_snapshot


def stamp(cfg: RunConfig, *, run_tag: str = "") -> RunConfig:
    """`cfg` with `data.snapshot` measured now and `run_tag` kept only when every run must retrain."""
    snap = data_snapshot(cfg.data.train, split=cfg.data.split)
    tag = run_tag if cfg.promotion.retrain_if_data_unchanged else ""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, snapshot=snap), run_tag=tag)


def stamp_json(config_json: str, *, run_tag: str = "") -> str:
    return stamp(config_from_json(config_json), run_tag=run_tag).to_json()
