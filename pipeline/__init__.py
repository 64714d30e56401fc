"""The MASA training pipeline (KFP v2): DAG, local run, compile, submit and schedule.

Installed as `masa.pipeline`.
"""
