"""The messages an engine answers from another process: ("generate", requests), ("load", model dir),
("close", None), each answered ("ok", value) or ("error", traceback). One definition for the two
places an engine lives in a process of its own: a data-parallel replica (masa.engines.replicated) and
a run's engine service (masa.engines.service), which may itself hold replicas.
"""

from __future__ import annotations

from masa.engines.base import Engine


def answer(conn, engine: Engine, fresh: str | None = None) -> None:
    """Answer one client's ("generate", requests) / ("load", dir) messages until its ("close", None)
    or its end of the connection. `fresh`: the directory the engine has just been started from, whose
    load is skipped once (any later load reloads: a path says nothing of what is in it now). An engine
    error propagates to the caller."""
    while True:
        try:
            op, arg = conn.recv()
        except (EOFError, OSError):
            return
        if op == "generate":
            conn.send(("ok", engine.generate(arg)))
        elif op == "load":
            if arg != fresh:
                engine.load_weights(arg)
            fresh = None
            conn.send(("ok", engine.max_model_len))
        else:
            conn.send(("ok", None))
            return
