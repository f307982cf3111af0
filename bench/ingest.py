"""Ingest benchmark: the store's durable bulk write against polars' Parquet writer, same rows.

    .venv/bin/python bench/ingest.py [--rows N] [--repeat R] [--dir DIR]

Builds a realistic sparse SAE activation table once (seeded, not timed): example_id ascending as an
SAE emits it, ~k=32 distinct feature_ids of d_sae=4096 per example, positive float32 values. Then,
alternating the order each round, times

  store    `Store.open(fresh file)` + `insert_frame('activations', table)` in a transaction +
           `CHECKPOINT` + `close()`: an end-to-end durable write into a new database file;
  parquet  `polars.DataFrame.write_parquet(path)` with polars' defaults (zstd, statistics on).

Takes the median of each, checks row count and sum(value) of both outputs after every write (not
timed), and prints progress to stderr and, as the last line of stdout, one JSON object:

  {"bench": "ingest", "rows": ..., "repeat": ..., "store_rows_per_s": ..., "parquet_rows_per_s": ...,
   "ratio_store_to_parquet": ..., "store_seconds": ..., "parquet_seconds": ...,
   "store_cpu_seconds": ..., "parquet_cpu_seconds": ..., "store_bytes": ..., "parquet_bytes": ...,
   "target_ratio": 0.8, "meets_target": ...}

Rates and the ratio are wall-clock; the CPU seconds (this process, all threads) are there to read a
run on a busy machine, where wall-clock times swing but CPU work does not.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store import Store

TARGET_RATIO = 0.8
D_SAE = 4096
K = 32
SAE_ID = 1
SEED = 20240611


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_activations(rows: int, *, d_sae: int = D_SAE, k: int = K, seed: int = SEED) -> pl.DataFrame:
    """`rows` sparse activations (sae_id, example_id, feature_id, value), example_id ascending.

    Each example has a Poisson(k) number (at least 1) of distinct, ascending feature ids; feature
    popularity is skewed (a few features fire often, most rarely). Values are full-precision float32
    > 0 spread over about one order of magnitude (lognormal), like the outputs of a TopK or ReLU SAE.
    """
    rng = np.random.default_rng(seed)
    n_examples = math.ceil(rows / k * 1.05) + 64  # enough that the counts sum past `rows`
    per_example = np.clip(rng.poisson(k, n_examples), 1, d_sae)
    assert per_example.sum() >= rows
    per_example = per_example[: int(np.searchsorted(np.cumsum(per_example), rows)) + 1]
    per_example[-1] -= int(per_example.sum()) - rows  # trim the last example to hit `rows` exactly
    per_example = per_example[per_example > 0]
    example_id = np.repeat(np.arange(per_example.size, dtype=np.int32), per_example)
    starts = np.concatenate(([0], np.cumsum(per_example)[:-1]))
    rank = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_example)
    # Distinct sorted ids per example: sorted draws from [0, d_sae - n] plus their rank within it.
    # Drawing through a power of a uniform skews features towards low ids, like SAE feature density.
    span = (d_sae - np.repeat(per_example, per_example) + 1).astype(np.int64)
    draw = (rng.random(rows) ** 2 * span).astype(np.int64)
    draw = np.sort(example_id.astype(np.int64) * d_sae + draw) - example_id.astype(np.int64) * d_sae
    feature_id = (draw + rank).astype(np.int32)
    value = rng.lognormal(mean=0.5, sigma=0.5, size=rows).astype(np.float32)
    return pl.DataFrame(
        {
            "sae_id": np.full(rows, SAE_ID, dtype=np.int32),
            "example_id": example_id,
            "feature_id": feature_id,
            "value": value,
        }
    )


def cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (DuckDB's and polars' included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_store(path: Path, frame: pl.DataFrame) -> tuple[float, float]:
    """(wall, CPU) seconds for a durable write of `frame` into a fresh database file at `path`."""
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    store = Store.open(path)
    try:
        with store.transaction():
            store.insert_frame("activations", frame)
        store.con.execute("CHECKPOINT")
    finally:
        store.close()
    return time.perf_counter() - start, cpu_seconds() - cpu


def write_parquet(path: Path, frame: pl.DataFrame) -> tuple[float, float]:
    """(wall, CPU) seconds for polars' default Parquet write of `frame` to `path`."""
    path.unlink(missing_ok=True)
    cpu, start = cpu_seconds(), time.perf_counter()
    frame.write_parquet(path)
    return time.perf_counter() - start, cpu_seconds() - cpu


def verify_store(path: Path, rows: int, value_sum: float) -> None:
    with Store.open(path, read_only=True) as store:
        got_rows, got_sum = store.con.execute(
            "SELECT count(*), sum(value::DOUBLE) FROM activations"
        ).fetchone()  # type: ignore[misc]
    if got_rows != rows or not math.isclose(got_sum, value_sum, rel_tol=1e-9):
        raise SystemExit(f"store verification failed: {got_rows} rows, sum {got_sum} (want {rows}, {value_sum})")


def verify_parquet(path: Path, rows: int, value_sum: float) -> None:
    got = pl.scan_parquet(path).select(pl.len(), pl.col("value").cast(pl.Float64).sum()).collect().row(0)
    if got[0] != rows or not math.isclose(got[1], value_sum, rel_tol=1e-9):
        raise SystemExit(f"parquet verification failed: {got[0]} rows, sum {got[1]} (want {rows}, {value_sum})")


def run(rows: int, repeat: int, directory: Path) -> dict[str, object]:
    log(f"building {rows:,} sparse activations (d_sae={D_SAE}, k~{K}) ...")
    start = time.perf_counter()
    frame = make_activations(rows)
    value_sum = float(frame["value"].cast(pl.Float64).sum())
    log(
        f"  built in {time.perf_counter() - start:.1f}s: {frame['example_id'].n_unique():,} examples, "
        f"{frame.estimated_size() / 2**20:.0f} MiB in memory"
    )
    db_path, parquet_path = directory / "bench_ingest.duckdb", directory / "bench_ingest.parquet"
    store_s: list[float] = []
    parquet_s: list[float] = []
    store_cpu: list[float] = []
    parquet_cpu: list[float] = []
    for i in range(repeat):
        order = ("store", "parquet") if i % 2 == 0 else ("parquet", "store")
        for which in order:
            if which == "store":
                seconds, cpu = write_store(db_path, frame)
                verify_store(db_path, rows, value_sum)
                store_s.append(seconds)
                store_cpu.append(cpu)
            else:
                seconds, cpu = write_parquet(parquet_path, frame)
                verify_parquet(parquet_path, rows, value_sum)
                parquet_s.append(seconds)
                parquet_cpu.append(cpu)
            log(
                f"  round {i + 1}/{repeat} {which:7s} {seconds:7.3f}s wall {cpu:7.3f}s CPU "
                f"{rows / seconds:14,.0f} rows/s"
            )
    store_rate = rows / statistics.median(store_s)
    parquet_rate = rows / statistics.median(parquet_s)
    ratio = store_rate / parquet_rate
    result = {
        "bench": "ingest",
        "rows": rows,
        "repeat": repeat,
        "store_rows_per_s": round(store_rate),
        "parquet_rows_per_s": round(parquet_rate),
        "ratio_store_to_parquet": round(ratio, 3),
        "store_seconds": round(statistics.median(store_s), 4),
        "parquet_seconds": round(statistics.median(parquet_s), 4),
        "store_cpu_seconds": round(statistics.median(store_cpu), 4),
        "parquet_cpu_seconds": round(statistics.median(parquet_cpu), 4),
        "store_bytes": db_path.stat().st_size,
        "parquet_bytes": parquet_path.stat().st_size,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
    }
    log(
        f"store {store_rate:,.0f} rows/s, parquet {parquet_rate:,.0f} rows/s, ratio {ratio:.2f} "
        f"(target {TARGET_RATIO}); files {result['store_bytes']:,} B vs {result['parquet_bytes']:,} B"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows to write (default 20,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed writes of each kind (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix="bench_ingest_", dir=args.dir))
    else:
        directory = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        result = run(args.rows, args.repeat, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
