"""Generated bad inputs across every command and input format (tests/bad_input_cases.py), each through the
real `mini` in its own process: exit status 2, one line `mini: error: …` naming the thing at fault, no
traceback, nothing on standard output, and no file changed — the complete database byte-identical, the
case's own files as they were, and for imports no new database file.

Each command line runs in a process forked from one that has already imported mini (tests/cli_launcher.py
says why); a sample of the cases also runs as a plain `python -m tui.cli` and must end the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bad_input_cases import BadInput, all_cases, write_good_files

CASES = all_cases()


@pytest.fixture(scope="session")
def session_files(app_db_template: Path, tmp_path_factory) -> Path:
    """good/ (every input format, good) and base.duckdb (a dataset with a ranked, labelled, validated run)."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    write_good_files(folder / "good")
    shutil.copy(app_db_template, folder / "base.duckdb")
    return folder


@pytest.fixture(scope="session")
def work_db(session_files: Path) -> Path:
    """The database the cases run on (a copy, restored whenever a case changed it)."""
    path = session_files / "work" / "mini.duckdb"
    path.parent.mkdir()
    shutil.copy(session_files / "base.duckdb", path)
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` (not following the good/ link) with its content's digest."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        relative = str(path.relative_to(folder))
        if relative == "good" or relative.startswith("good/"):
            continue
        seen[relative] = _digest(path) if path.is_file() else "folder"
    return seen


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MINI_DB"}


@pytest.fixture(scope="session")
def launcher() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_launcher.py"))],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert process.stdout is not None and json.loads(process.stdout.readline()) == {"ready": True}
    yield process
    process.stdin.close()  # type: ignore[union-attr]
    process.wait(timeout=30)


@pytest.fixture
def mini(launcher: subprocess.Popen[str]):
    def run(args: list[str], folder: Path, stdin: str | None) -> subprocess.CompletedProcess[str]:
        request = {"argv": args, "cwd": str(folder), "env": _env(), "stdin": stdin, "timeout": 90}
        launcher.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        launcher.stdin.flush()  # type: ignore[union-attr]
        reply = json.loads(launcher.stdout.readline())  # type: ignore[union-attr]
        return subprocess.CompletedProcess(args, reply["returncode"], reply["stdout"], reply["stderr"])
    return run


def _plain_mini(args: list[str], folder: Path, stdin: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=folder, env=_env(), input=stdin,
                          capture_output=True, text=True, timeout=120)


def _assert_refused(done: subprocess.CompletedProcess[str], case: BadInput) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:], done.stdout[-2000:])
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mini: error: "), lines[0]
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert done.stdout == "", done.stdout


def _check_case(case: BadInput, run, session_files: Path, work_db: Path, folder: Path) -> str:
    """Run the case; assert it was refused and changed nothing; return its one line."""
    folder.mkdir(exist_ok=True)
    (folder / "good").symlink_to(session_files / "good", target_is_directory=True)
    if case.write is not None:
        case.write(folder)
    args = [arg.replace("{good}", "good") for arg in case.args]
    db = work_db if case.db is None else case.db
    wal = work_db.with_name(work_db.name + ".wal")
    before, files_before = _digest(work_db), _snapshot(folder)
    try:
        done = run([*args, "--db", str(db)], folder, case.stdin)
        _assert_refused(done, case)
        assert _digest(work_db) == before, "a refused command changed the database file"
        assert not wal.exists(), "a refused command left a write-ahead log beside the database"
        assert _snapshot(folder) == files_before, "a refused command wrote or changed a file"
    finally:
        if wal.exists() or _digest(work_db) != before:  # the next case starts from the complete database
            wal.unlink(missing_ok=True)
            shutil.copy(session_files / "base.duckdb", work_db)
    if case.imports:
        again = run([*args, "--db", "fresh.duckdb"], folder, case.stdin)
        _assert_refused(again, case)
        assert not list(folder.glob("fresh.duckdb*")), "a refused import left a database file behind"
    return done.stderr


@pytest.mark.parametrize("case", CASES, ids=[case.case_id for case in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case: BadInput, mini, session_files: Path,
                                                              work_db: Path, tmp_path: Path) -> None:
    _check_case(case, mini, session_files, work_db, tmp_path)


PLAIN = CASES[::40]


@pytest.mark.parametrize("case", PLAIN, ids=[case.case_id for case in PLAIN])
def test_a_plain_process_ends_the_same_way(case: BadInput, mini, session_files: Path, work_db: Path,
                                           tmp_path: Path) -> None:
    """The launcher changes nothing: `python -m tui.cli` refuses the same case with the same line."""
    plain = _check_case(case, _plain_mini, session_files, work_db, tmp_path / "plain")
    forked = _check_case(case, mini, session_files, work_db, tmp_path / "forked")
    assert _steady(plain.replace(str(tmp_path / "plain"), str(tmp_path / "forked"))) == _steady(forked)


def _steady(line: str) -> str:
    """The line without the memory available at the moment, which moves between two runs."""
    import re

    return re.sub(r"this machine has [\d.]+ \w+ available", "this machine has … available", line)


def test_the_suite_covers_every_command_and_format() -> None:
    """The closing count: at least 300 cases, over every command of `mini` and every input format."""
    from tui.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    tried = {case.args[0] for case in CASES}
    assert len(CASES) >= 300
    assert commands - tried - {"tui"} == set(), commands - tried
    prefixes = {case.case_id.split("/")[0] for case in CASES}
    for fmt in ("counts.npy", "counts.npz", "counts.parquet", "counts.csv", "meta.parquet", "meta.csv", "kilosort",
                "mat", "spikes.csv", "spikes.parquet", "behaviour", "trials", "events", "nwb", "activations", "db"):
        assert fmt in prefixes, fmt
