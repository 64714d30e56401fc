"""Golden test of the compiled `smoke` pipeline: what a cluster receives must not drift unnoticed.

The compiled KFP IR YAML (retries, resources, caching, images, Kubernetes settings, parameter defaults,
the DAG's shape) is normalised and compared with the checked-in `tests/golden/smoke.pipeline.yaml`.
Normalised: the kfp SDK version and this package's version (image tags, `sdkVersion`), so a release bump
alone does not fail it. Any other difference fails with a unified diff; when the change is intended,
review the diff and regenerate the file with one command:

    make golden        # = .venv/bin/python tests/test_pipeline_golden.py --update
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "smoke.pipeline.yaml"
# the compile reads these; the golden file is the compile of a clean environment
_ENV = ("MASA_IMAGE_REGISTRY",)


def normalise(text: str, *, masa_version: str, kfp_version: str) -> str:
    """Blank the versions that change with a release, keep everything else byte for byte."""
    text = text.replace(f"kfp-{kfp_version}", "kfp-<version>")
    return re.sub(rf"(?<![\w.]){re.escape(masa_version)}(?![\w.])", "<version>", text)


def compiled_smoke(tmp: Path) -> str:
    import kfp

    import masa
    from masa.config import load_config
    from masa.pipeline.compile import compile_pipeline

    out = compile_pipeline(load_config("smoke"), tmp / "smoke.yaml")
    return normalise(out.read_text(), masa_version=masa.__version__, kfp_version=kfp.__version__)


def test_normalise_blanks_only_whole_versions():
    text = "image: r/masa-pipeline-cpu:0.1.0\nx: 10.1.0.5\nsdkVersion: kfp-2.17.3\nlr: 0.1\n"
    assert normalise(text, masa_version="0.1.0", kfp_version="2.17.3") == (
        "image: r/masa-pipeline-cpu:<version>\nx: 10.1.0.5\nsdkVersion: kfp-<version>\nlr: 0.1\n")


def test_compiled_smoke_pipeline_matches_the_golden_file(tmp_path, monkeypatch):
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    got = compiled_smoke(tmp_path)
    want = GOLDEN.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "golden", "compiled", n=2))
        lines = diff.splitlines()
        raise AssertionError(
            f"the compiled smoke pipeline differs from {GOLDEN.relative_to(ROOT)} ({len(lines)} diff lines); "
            "if intended, review and run `make golden`:\n" + "\n".join(lines[:80]))


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_pipeline_golden.py --update")
    import os
    import tempfile

    for name in _ENV:
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(compiled_smoke(Path(d)))
    print(f"wrote {GOLDEN.relative_to(ROOT)}")
