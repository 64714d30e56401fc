"""masa.pipeline.warm: the fork server that starts kfp.local's tasks warm. The whole smoke DAG run warm
against the same DAG run cold, row for row, is tests/test_pipeline_local.py's; a failing step and Ctrl-C
under a warm `masa run` are tests/test_run_terminal.py's. Here: which commands go warm, and that a task's
output and exit status come back as a subprocess's would."""

import contextlib
import io
import time
from pathlib import Path

import yaml

from masa.pipeline.warm import WarmServer, task_argv, warm_env

GOLDEN = Path(__file__).parent / "golden" / "smoke.pipeline.yaml"


def test_every_component_of_the_compiled_pipeline_goes_warm():
    spec = next(yaml.safe_load_all(GOLDEN.read_text()))
    execs = spec["deploymentSpec"]["executors"]
    for name, ex in execs.items():
        c = ex["container"]
        parsed = task_argv(c["command"] + c.get("args", []))
        assert parsed is not None, name
        source, args = parsed
        assert "def " in source and args[args.index("--function_to_execute") + 1], name


def test_other_commands_run_as_kfp_local_runs_them():
    assert task_argv(["python3", "-m", "kfp.dsl.executor_main"]) is None
    pip = ["sh", "-c", "python3 -m pip install x && python3 -m kfp.dsl.executor_main ephemeral_component.py", "src"]
    assert task_argv(pip) is None
    assert task_argv(["sh", "-ec", "echo ephemeral_component.py kfp.dsl.executor_main pip install x", "s"]) is None


def test_a_task_that_sets_an_import_time_variable_starts_cold():
    server_env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin"}
    assert warm_env({}, server_env) and warm_env({"MASA_METRICS_PORT": "9090"}, server_env)
    assert warm_env({"HF_HUB_OFFLINE": "1"}, server_env)  # what the server imported with
    # the stage step lifts offline mode; huggingface_hub read it when the server imported it
    assert not warm_env({"HF_HUB_OFFLINE": "0"}, server_env)


def _ready(server: WarmServer) -> None:
    t0 = time.monotonic()
    while not server.is_ready():
        assert server.proc.poll() is None, "the warm server exited"
        assert time.monotonic() - t0 < 60, "the warm server did not start"
        time.sleep(0.05)


def test_a_task_output_and_exit_status_come_back(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"  # the server's TMPDIR, where each task writes its component's source
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    server = WarmServer(tmp_path, modules=("json",))
    try:
        _ready(server)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            # executor_main's own argument parser rejects the call: exit status 2, its usage on stderr
            code = server.run("", ["--no-such-flag"], env={"PATH": "/usr/bin"})
        assert code == 2
        assert "usage:" in out.getvalue() and "required: --function_to_execute" in out.getvalue()
        with contextlib.redirect_stdout(out):  # the server forks every task afresh: a second one works
            code = server.run("", ["--no-such-flag"], env={})
        assert code == 2 and server.warm_tasks == 2
        assert not list(scratch.glob("masa-task-*"))  # each task removed its source's folder on its way out
        # a task killed by a signal still reports (its monitor waits for it): -9, as Popen.wait says
        src = "def f():\n    import os, signal\n    os.kill(os.getpid(), signal.SIGKILL)\n"  # as compiled: no decorator
        ex_input = '{"inputs": {}, "outputs": {"outputFile": "%s"}}' % (tmp_path / "out.json")
        with contextlib.redirect_stdout(out):
            code = server.run(src, ["--executor_input", ex_input, "--function_to_execute", "f"], env={})
        assert code == -9
    finally:
        server.close()
    assert server.proc.poll() is not None and not Path(server.sock).exists()


_FIRST_READ = """
import sys
import pyarrow as pa
import pyarrow.parquet as pq
pq.write_table(pa.table({"x": [1, 2]}), sys.argv[1])
before = set(sys.modules)
pq.read_table(sys.argv[1])
print(" ".join(sorted(m for m in set(sys.modules) - before if m.count(".") <= 1)))
"""


def test_the_server_preloads_what_a_tasks_first_parquet_read_imports(tmp_path):
    # pyarrow.parquet.read_table imports pyarrow.dataset (and pandas) on a process's first call: 0.3 s
    # that every forked rollout, score and train task (and each training rank) would pay again
    import subprocess
    import sys

    from masa.pipeline.warm import PRELOAD

    out = subprocess.run([sys.executable, "-c", _FIRST_READ, str(tmp_path / "t.parquet")], capture_output=True,
                         text=True, check=True).stdout.split()
    assert "pyarrow.dataset" in out and "pyarrow.dataset" in PRELOAD


def test_a_task_that_comes_while_the_server_imports_waits_for_it(tmp_path):
    # kfp.local's handler replaced by warm_tasks: the first task is sent before the server can be ready
    # (it imports torch), and runs warm, not cold: the server counts it
    from kfp.local import subprocess_task_handler as handler

    from masa.pipeline.warm import warm_tasks

    spec = next(yaml.safe_load_all(GOLDEN.read_text()))
    c = next(iter(spec["deploymentSpec"]["executors"].values()))["container"]
    command = c["command"] + ["--no-such-flag"]  # executor_main rejects it at once: exit status 2
    with warm_tasks(tmp_path) as server:
        assert not server.is_ready()
        with contextlib.redirect_stdout(io.StringIO()):
            code = handler.run_local_subprocess(command, {})
        assert code == 2 and server.warm_tasks == 1


def test_a_tmpdir_too_long_for_the_sockets_runs_every_step_cold(tmp_path, monkeypatch):
    # sun_path holds 107 bytes; the longest socket is a trainer's, "trainer-" + a 16-hex key + ".sock",
    # in warm_tasks' "masa-eng-XXXXXXXX" folder: 48 bytes with the slash before it, so TMPDIR may be 59
    from masa.config import TrainConfig
    from masa.pipeline.warm import socket_room, warm_tasks
    from masa.train.service import service_key

    assert len(service_key("masa", TrainConfig(), 2, None) + ".sock") == len("trainer-0123456789abcdef.sock")
    assert socket_room("/" + "t" * 58) is None
    reason = socket_room("/" + "t" * 59)
    assert reason == (f"TMPDIR /{'t' * 59} is 60 bytes long, too long for the run's Unix sockets (at most 59): "
                      "every step starts cold, as with --cold; a shorter TMPDIR keeps them warm")
    long_dir = tmp_path / ("t" * 90)
    long_dir.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(long_dir))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warm_tasks(tmp_path) as server:
        assert server is None  # kfp.local's own handler: every task a fresh interpreter
    assert out.getvalue() == f"masa: {socket_room(str(long_dir))}\n"
