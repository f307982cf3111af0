"""Runs `mini` command lines in forked processes of one interpreter that has already imported mini's modules.

Hundreds of bad-input cases each need their own `mini` process (exit status, standard error, a clean start),
and a fresh `python -m tui.cli` spends one to three seconds importing torch, scikit-learn and polars before it
reads its first option: the generated suite would take most of CI's quarter hour doing imports. Here one
process imports them once; each command line then runs in a child forked from it, which calls the entry point
the `mini` script calls (tui.cli:main) with its own argv, working folder, environment, standard input, output
and error, and exit status — a traceback and exit status 1 when it raises, as the interpreter would.

Protocol: one JSON request per line on standard input ({"argv", "cwd", "env", "stdin", "timeout"}); one JSON
reply per line on standard output ({"returncode", "stdout", "stderr"}). Started by tests/test_bad_inputs.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import time

PRELOAD = ("tui.cli", "tui.cli_imports", "tui.cli_queries", "tui.progress", "tui.table_text", "engine.pipeline", "engine.analysis.rank",
           "engine.validation.validate_run", "engine.ingest.importer", "engine.ingest.spike_import", "engine.validation.report", "engine.validation.labels",
           "engine.validation.freezes", "engine.ingest.capture", "engine.demo", "store", "store.sql", "polars", "duckdb", "torch")


def _child(request: dict, out_path: str, err_path: str, in_path: str) -> None:
    import traceback

    from tui.cli import main

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, mode in ((0, in_path, os.O_RDONLY), (1, out_path, os.O_WRONLY), (2, err_path, os.O_WRONLY)):
        os.dup2(os.open(path, mode), fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 (the child's own descriptors, closed at exit)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    sys.argv = ["mini", *request["argv"]]
    code = 0
    try:
        code = main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _run(request: dict) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        out_path, err_path, in_path = (os.path.join(scratch, name) for name in ("out", "err", "in"))
        with open(in_path, "w") as stdin:
            stdin.write(request.get("stdin") or "")
        for path in (out_path, err_path):
            open(path, "w").close()
        pid = os.fork()
        if pid == 0:
            _child(request, out_path, err_path, in_path)
        deadline = time.monotonic() + request.get("timeout", 90)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
                break
            time.sleep(0.005)
        with open(out_path, errors="replace") as out, open(err_path, errors="replace") as err:
            reply = {"stdout": out.read(), "stderr": err.read()}
    reply["returncode"] = "timeout" if status is None else os.waitstatus_to_exitcode(status)
    return reply


def main() -> None:
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_run(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
