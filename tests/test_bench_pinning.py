"""bench/bench_toy_pinning.py: each arm's child environment carries exactly its pins."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("bench_toy_pinning",
                                               Path(__file__).parents[1] / "bench" / "bench_toy_pinning.py")
bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench)


def test_unpinned_arm_drops_the_callers_pins():
    # A bench started under MKL_CBWR=AVX2 (or masa's default AUTO,STRICT) must still time an unpinned
    # arm, or its 1.00x baseline would be a pinned build and every ratio off by that pin. MKL's pin is
    # set empty, not removed: the child imports masa, which sets AUTO,STRICT where the variable is unset.
    base = {"PATH": "/bin", "MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx512"}
    assert bench.arm_env(base, *bench.ARMS[0][1:]) == {"PATH": "/bin", "MKL_CBWR": ""}


def test_pinned_arm_sets_both_and_keeps_the_rest():
    env = bench.arm_env({"PATH": "/bin", "MKL_CBWR": "AVX2"}, "avx2", "COMPATIBLE")
    assert env == {"PATH": "/bin", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}


def test_arms_start_unpinned_and_include_the_cross_vendor_branch():
    # The ratios are to the first arm, so it must be the unpinned one; COMPATIBLE is the branch
    # whose hash other processors compare against.
    assert bench.ARMS[0][1:] == (None, "")
    assert any(cbwr == "COMPATIBLE" for _, _, cbwr in bench.ARMS)
