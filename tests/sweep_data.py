"""What the sweep tests share: a small recording's database, the real `mini sweep`, and reading the results."""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb

from tests.conftest import run_cli


def build_small_database(folder: Path) -> Path:
    """A database holding a small sample recording (3,000 bins × 24 units) as dataset 'small', no runs."""
    from sample_data import SampleConfig, generate

    generate(SampleConfig(n_bins=3000, n_units=24, n_conditions=4, seed=3)).write(folder / "data")
    done = run_cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "small",
                   "--db", "small.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    return folder / "small.duckdb"


def rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def trials(path: Path, sweep_id: int = 1) -> dict[int, dict]:
    """sweep_trials of one sweep, by trial id, as dicts."""
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute("SELECT * FROM sweep_trials WHERE sweep_id = ? ORDER BY trial_id", [sweep_id])
        names = [c[0] for c in cursor.description]
        return {row[1]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def sweep(db: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`mini sweep ARGS --db DB`, run as a person runs it."""
    return run_cli("sweep", *args, "--db", str(db), cwd=db.parent, timeout=timeout)


def folder_of(db: Path, sweep_id: int = 1) -> Path:
    """Where a sweep's folder goes by default: NAME.sweeps/sweep-N beside the database."""
    return db.parent / f"{db.stem}.sweeps" / f"sweep-{sweep_id}"
