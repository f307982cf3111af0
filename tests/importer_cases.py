"""Helpers for the import tests: a small recording written in every format, the CLI, table counts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

N_TRIALS = 10
PER_TRIAL = 20
N_EXAMPLES = N_TRIALS * PER_TRIAL
N_UNITS = 6
BIN_S = 0.02
CONDITIONS = ("left", "right", "up", "down")
UNIT_NAMES = [f"cell_{chr(ord('a') + i)}" for i in range(N_UNITS)]
SPEED_NAN_ROWS = (3, 57, 128)
"""Rows where `speed` was not measured (NaN): they must become missing values, not errors."""
HEADING_NULL_ROWS = (11, 190)
"""Rows where `heading` is empty (null)."""


@dataclass
class Recording:
    counts: np.ndarray
    """[examples × units] non-negative integer counts."""
    meta: pl.DataFrame
    """One row per example: trial, time_s and the natural features."""


def make_recording(seed: int = 7) -> Recording:
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.3, 3.0, N_UNITS)
    counts = rng.poisson(rates, size=(N_EXAMPLES, N_UNITS)).astype(np.int64)
    speed = rng.gamma(2.0, 5.0, N_EXAMPLES)
    speed[list(SPEED_NAN_ROWS)] = np.nan
    heading = rng.uniform(-math.pi, math.pi, N_EXAMPLES)
    meta = pl.DataFrame({
        "trial": np.repeat(np.arange(N_TRIALS) + 101, PER_TRIAL),
        "time_s": np.round(np.arange(N_EXAMPLES) * BIN_S, 6),
        "condition": np.array(CONDITIONS)[rng.integers(0, len(CONDITIONS), N_EXAMPLES)],
        "speed": speed,
        "reward": rng.integers(0, 2, N_EXAMPLES),
        "heading": heading,
        "block": rng.integers(1, 4, N_EXAMPLES),
    }).with_columns(
        pl.when(pl.int_range(pl.len()).is_in(list(HEADING_NULL_ROWS))).then(None)
        .otherwise(pl.col("heading")).alias("heading")
    )
    return Recording(counts=counts, meta=meta)


def write_counts(counts: np.ndarray, path: Path, unit_names: list[str] | None = None) -> Path:
    """Write a count matrix as .npy, .npz (key `counts` plus `unit_names`), .parquet or .csv."""
    names = unit_names or UNIT_NAMES[: counts.shape[-1]]
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, counts)
    elif suffix == ".npz":
        np.savez(path, counts=counts, unit_names=np.array(names))
    else:
        frame = pl.DataFrame({name: counts[:, i] for i, name in enumerate(names)})
        frame.write_parquet(path) if suffix == ".parquet" else frame.write_csv(path)
    return path


def write_meta(meta: pl.DataFrame, path: Path) -> Path:
    meta.write_parquet(path) if path.suffix == ".parquet" else meta.write_csv(path)
    return path


def run_import(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`mini import ARGS` in its own process, the way a person runs it."""
    env = {k: v for k, v in os.environ.items() if k != "MINI_DB"}
    return subprocess.run([sys.executable, "-m", "tui.cli", "import", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def table_row_counts(db_path: Path) -> dict[str, int]:
    """Row count of every table in the file, listed from information_schema."""
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        names = [r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name"
        ).fetchall()]
        return {name: con.execute(f'SELECT count(*) FROM "{name}"').fetchall()[0][0] for name in names}
    finally:
        con.close()
