"""What the pipeline's steps run: a run's store layout (pointers, run-once parts), a round's rollout,
scoring, training and evaluation, and the settings each step derives from the run's configuration.

Layered below `masa.steps` (which only reads pointers, calls one entry point here and publishes) and
above the engines, storage, training, data and configuration packages; see docs/architecture.md.
"""
