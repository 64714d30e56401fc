"""MASA reinforcement learning as a Kubeflow pipeline (README.md)."""

import os

__version__ = "0.1.0"

# MKL's strict conditional numerical reproducibility, before any MKL call of this process (MKL reads the
# variable once, at its first call; its children inherit it): PyTorch's CPU wheels do float32 matrix
# products in MKL, whose kernels may otherwise take paths that depend on the memory alignment of their
# operands, so two builds of one toy recipe, or a forked training rank and a fresh one, could differ in
# the last bits (docs/training.md, "Bit-equal runs"). AUTO keeps the machine's best instruction set;
# measured cost 1.03-1.06x a toy warm-start step (bench/bench_toy_pinning.py). A value the user set wins;
# `MKL_CBWR=` (empty) turns it off. GPU runs are unaffected (cuBLAS, not MKL).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
