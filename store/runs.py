"""Training runs: the run row, checkpoints while it trains, and everything it produced when it ends.

A run row is committed the moment training starts, so a crash leaves a trace; its results are
written in one transaction at the end, so a crash never leaves half of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from store.db import Store
from store.errors import StoreError

if TYPE_CHECKING:  # Store.open imports this module; polars is imported where results are written
    import polars as pl
    import pyarrow as pa


@dataclass
class RunResults:
    """What a finished (or cancelled) run stores, one frame per table; sae ids are 0..n-1 here
    (the instance index) and are replaced by the database's ids on the way in."""

    saes: pl.DataFrame
    features: pl.DataFrame
    decoder: pl.DataFrame
    activations: pa.Table | pl.DataFrame
    qc: pl.DataFrame
    unit_qc: pl.DataFrame
    train_log: pl.DataFrame
    flags: pl.DataFrame | None = None
    """quality_flags rows (sae_id = instance index; dataset_id and run_id are added here)."""
    encoder_lags: pl.DataFrame | None = None
    """Runs with --history: sae_id, feature_id, lag, norm, top_unit_id (None: no temporal context)."""


def start_run(db: Store, dataset_id: int, config: dict[str, Any], device: str,
              epoch: dict[str, Any] | None = None, units: dict[str, list[int]] | None = None) -> int:
    """Commit the run row (and the epoch it trains on, `store.epochs.epoch_row`; None: every bin; and a
    transcoder's units, role ('input', 'target') -> unit ids in model order)."""
    from store.epochs import write_epoch

    with db.transaction():
        run_id = _insert_run(db, dataset_id, config, device)
        write_epoch(db, run_id, "train", epoch)
        _insert_units(db, run_id, units)
    return run_id


def _insert_units(db: Store, run_id: int, units: dict[str, list[int]] | None) -> None:
    rows = [(run_id, role, unit_id, position) for role, unit_ids in (units or {}).items()
            for position, unit_id in enumerate(unit_ids)]
    if rows:
        db.con.executemany("INSERT INTO run_units (run_id, role, unit_id, position) VALUES (?, ?, ?, ?)", rows)


def run_units(db: Store, run_id: int) -> dict[str, list[int]]:
    """A transcoder run's units, role ('input', 'target') -> unit ids in model order; {} for a plain SAE."""
    rows = db.con.execute("SELECT role, unit_id FROM run_units WHERE run_id = ? ORDER BY role, position",
                          [run_id]).fetchall()
    out: dict[str, list[int]] = {}
    for role, unit_id in rows:
        out.setdefault(role, []).append(int(unit_id))
    return out


def _insert_run(db: Store, dataset_id: int, config: dict[str, Any], device: str) -> int:
    run_id = int(db.scalar("SELECT coalesce(max(run_id), 0) + 1 FROM runs"))
    db.con.execute(
        "INSERT INTO runs (run_id, dataset_id, status, config, device) VALUES (?, ?, 'running', ?, ?)",
        [run_id, dataset_id, json.dumps(config, sort_keys=True), device],
    )
    return run_id


def add_trained_run(db: Store, dataset_id: int, config: dict[str, Any], device: str, results: RunResults, *,
                    examples_seen: int, seconds: float, epoch: dict[str, Any] | None = None,
                    final: tuple[int, int, bytes] | None = None, units: dict[str, list[int]] | None = None,
                    then: Callable[[int], None] = lambda _: None) -> tuple[int, list[int]]:
    """A run trained elsewhere (a sweep's trial) stored whole in one transaction: its row, the epoch it trained
    on, a transcoder's `units` (as start_run), its results, status finished, its `final` checkpoint (epoch, step,
    state) and `then(run_id)` (e.g. linking it to the sweep). Returns (run_id, sae ids)."""
    from store.epochs import write_epoch

    with db.transaction():
        run_id = _insert_run(db, dataset_id, config, device)
        write_epoch(db, run_id, "train", epoch)
        _insert_units(db, run_id, units)
        sae_ids = _write_results(db, run_id, results, "finished", examples_seen, seconds)
        if final is not None:
            db.con.execute("INSERT INTO checkpoints (run_id, kind, epoch, step, state) VALUES (?, 'final', ?, ?, ?)",
                           [run_id, *final])
        then(run_id)
    return run_id, sae_ids


def save_checkpoint(db: Store, run_id: int, kind: str, epoch: int, step: int, state: bytes) -> None:
    with db.transaction():
        db.con.execute("DELETE FROM checkpoints WHERE run_id = ? AND kind = ?", [run_id, kind])
        db.con.execute(
            "INSERT INTO checkpoints (run_id, kind, epoch, step, state) VALUES (?, ?, ?, ?, ?)",
            [run_id, kind, epoch, step, state],
        )


def load_checkpoint(db: Store, run_id: int, kind: str = "latest") -> tuple[int, int, bytes] | None:
    rows = db.con.execute(
        "SELECT epoch, step, state FROM checkpoints WHERE run_id = ? AND kind = ?", [run_id, kind]
    ).fetchall()
    return (int(rows[0][0]), int(rows[0][1]), bytes(rows[0][2])) if rows else None


def get_run(db: Store, run_id: int) -> dict[str, Any]:
    row = db.row("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if row is None:
        have = [str(r[0]) for r in db.con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()]
        raise StoreError(f"{db.path}: no run {run_id} (runs: {', '.join(have) or 'none yet'})")
    row["config"] = json.loads(row["config"])
    return row


def set_run_status(db: Store, run_id: int, status: str, message: str | None = None) -> None:
    with db.transaction():
        db.con.execute(
            "UPDATE runs SET status = ?, message = ?, finished_at = current_timestamp WHERE run_id = ?",
            [status, message, run_id],
        )


def reopen_run(db: Store, run_id: int) -> None:
    """A resumed run is running again."""
    with db.transaction():
        db.con.execute("UPDATE runs SET status = 'running', finished_at = NULL, message = NULL WHERE run_id = ?",
                       [run_id])


def save_run_results(db: Store, run_id: int, results: RunResults, *, status: str, examples_seen: int,
                     seconds: float) -> list[int]:
    """Write every table of a run's results and its final status in one transaction; returns sae ids."""
    with db.transaction():
        return _write_results(db, run_id, results, status, examples_seen, seconds)


def _write_results(db: Store, run_id: int, results: RunResults, status: str, examples_seen: int,
                   seconds: float) -> list[int]:
    import polars as pl

    old = [r[0] for r in db.con.execute("SELECT sae_id FROM saes WHERE run_id = ?", [run_id]).fetchall()]
    if old:  # a resumed run replaces what an earlier, cancelled part of it stored
        for table in ("features", "decoder", "activations", "qc", "unit_qc", "train_log", "encoder_lags"):
            db.con.execute(f"DELETE FROM {table} WHERE sae_id IN (SELECT sae_id FROM saes WHERE run_id = ?)",
                           [run_id])
        db.con.execute("DELETE FROM quality_flags WHERE run_id = ?", [run_id])
        db.con.execute("DELETE FROM saes WHERE run_id = ?", [run_id])
    first = int(db.scalar("SELECT coalesce(max(sae_id), 0) + 1 FROM saes"))
    n = results.saes.height
    sae_ids = list(range(first, first + n))

    def with_ids(frame: pl.DataFrame | pa.Table) -> pl.DataFrame:
        frame = frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)  # type: ignore[assignment]
        return frame.with_columns((pl.col("sae_id") + first).cast(pl.Int32))

    db.insert_frame("saes", with_ids(results.saes).with_columns(pl.lit(run_id, pl.Int32).alias("run_id")))
    for table, frame in (("features", results.features), ("decoder", results.decoder),
                         ("activations", results.activations), ("qc", results.qc),
                         ("unit_qc", results.unit_qc), ("train_log", results.train_log)):
        db.insert_frame(table, with_ids(frame))
    if results.encoder_lags is not None:
        db.insert_frame("encoder_lags", with_ids(results.encoder_lags))
    if results.flags is not None and results.flags.height:
        dataset_id = db.scalar("SELECT dataset_id FROM runs WHERE run_id = ?", [run_id])
        db.insert_frame("quality_flags", with_ids(results.flags).with_columns(
            pl.lit(dataset_id, pl.Int32).alias("dataset_id"), pl.lit(run_id, pl.Int32).alias("run_id")))
    db.con.execute(
        "UPDATE runs SET status = ?, finished_at = current_timestamp, examples_seen = ?, seconds = ?,"
        " message = NULL WHERE run_id = ?",
        [status, examples_seen, seconds, run_id],
    )
    return sae_ids



# Every table keyed by sae_id, in the order rows are deleted (children before the saes rows).
_SAE_TABLES = ("train_log", "features", "decoder", "activations", "activations_by_feature",
               "activations_by_feature_builds", "qc", "unit_qc", "encoder_lags", "associations", "tuning_curves",
               "mis", "rankings", "suggestions", "label_undos", "labels", "validations", "signatures")


def delete_run(db: Store, run_id: int) -> dict[str, int]:
    """Delete a run and everything derived from it (its SAEs, results, ranking, labels, validations) in
    one transaction; returns the rows deleted per table. Labels go too: they name features that will
    no longer exist (export a report first to keep them)."""
    get_run(db, run_id)  # a clear error for a run that is not there
    deleted: dict[str, int] = {}
    saes = "(SELECT sae_id FROM saes WHERE run_id = ?)"
    with db.transaction():
        for table in _SAE_TABLES:
            deleted[table] = _delete(db, f"DELETE FROM {table} WHERE sae_id IN {saes}", [run_id])
        deleted["feature_matches"] = _delete(
            db, f"DELETE FROM feature_matches WHERE sae_id IN {saes} OR other_sae_id IN {saes}", [run_id, run_id])
        for table in ("quality_flags", "saes", "checkpoints", "analysis_epochs", "label_freezes", "run_units",
                      "runs"):
            deleted[table] = _delete(db, f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        db.con.execute("UPDATE sweep_trials SET run_id = NULL WHERE run_id = ?", [run_id])  # promote it again
    return deleted


def _delete(db: Store, sql: str, params: list) -> int:
    return int(db.con.execute(sql, params).fetchall()[0][0])


def finished_run_for(db: Store, dataset_id: int) -> int | None:
    """The latest finished run on a dataset, if any."""
    return db.scalar("SELECT max(run_id) FROM runs WHERE dataset_id = ? AND status = 'finished'", [dataset_id])


def load_saes(db: Store, run_id: int) -> pl.DataFrame:
    return db.frame("SELECT * FROM saes WHERE run_id = ? ORDER BY instance", [run_id])
