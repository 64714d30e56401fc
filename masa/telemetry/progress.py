"""Progress bars for long local work (`masa run`, the toy build, benchmarks), silent off a terminal.

A thin wrapper over tqdm: the bar is drawn only when its stream is a TTY, so pod logs and CI output
get no carriage-return noise (the structured logs carry progress there). `MASA_PROGRESS=0` turns bars
off, `=1` forces them on.

A pipeline step's output is never a TTY (kfp.local and pods capture it), so a step says what it is
doing with `phase(text)`: one `MASA-PHASE {json}` line on stderr (kfp.local merges it into the step's
log; stdout stays the commands' machine-readable output), which `masa run` shows under the running
step's name (masa.pipeline.local) and a pod log keeps as is.

    for batch in progress(batches, desc="rollout", unit="prompt"):
        ...
    with progress(total=n_tokens, desc="generate", unit="tok") as bar:
        bar.update(k)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

PROGRESS_ENV = "MASA_PROGRESS"
PHASE = "MASA-PHASE "


def enabled(stream: TextIO | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether bars are drawn on `stream` (default stderr): $MASA_PROGRESS if set, else stream.isatty()."""
    forced = (os.environ if environ is None else environ).get(PROGRESS_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(iterable: Iterable[Any] | None = None, *, total: float | None = None, desc: str | None = None,
             unit: str = "it", stream: TextIO | None = None, **tqdm_kwargs: Any) -> tqdm:
    """A tqdm bar on `stream` (default stderr), disabled (a pass-through) unless `enabled(stream)`."""
    stream = sys.stderr if stream is None else stream
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, disable=not enabled(stream),
                dynamic_ncols=True, **tqdm_kwargs)


def phase(text: str) -> None:
    """Announce what the running step does now (engine start, optimizer step k): see the module docstring."""
    print(PHASE + json.dumps({"phase": text}), file=sys.stderr, flush=True)
