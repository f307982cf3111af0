"""Rankings of a run's features: associations, MIS, stability matches, ranks and suggestions.

A ranking is recomputed as a whole, so writing one replaces every row of the run's SAEs in one
transaction: a crash leaves the previous ranking or the new one, never a mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from store.db import Store

RANKING_TABLES = ("associations", "tuning_curves", "mis", "feature_matches", "rankings", "suggestions")


@dataclass
class RankingResults:
    """One frame per table, with real sae ids."""

    associations: pl.DataFrame
    tuning_curves: pl.DataFrame
    mis: pl.DataFrame
    feature_matches: pl.DataFrame
    rankings: pl.DataFrame
    suggestions: pl.DataFrame


def save_ranking(db: Store, sae_ids: list[int], results: RankingResults, *, run_id: int | None = None,
                 epoch: dict[str, Any] | None = None) -> None:
    """Replace the ranking of `sae_ids`; with `run_id`, also the epoch it was computed on
    (`store.epochs.epoch_row`; None: every train + val bin)."""
    from store.epochs import write_epoch

    with db.transaction():
        if run_id is not None:
            write_epoch(db, run_id, "rank", epoch)
        for table in RANKING_TABLES:
            db.con.execute(f"DELETE FROM {table} WHERE sae_id IN (SELECT unnest(?))", [sae_ids])
        for table in RANKING_TABLES:
            frame = getattr(results, table)
            if frame.height:
                db.insert_frame(table, frame)


def load_activations(db: Store, sae_id: int) -> pl.DataFrame:
    """example_id, feature_id, value of one SAE (all splits; the caller keeps the ones it may use)."""
    return db.frame("SELECT example_id, feature_id, value FROM activations WHERE sae_id = ?", [sae_id])


def n_activations(db: Store, sae_ids: list[int]) -> dict[int, int]:
    """Stored activation rows per SAE (what load_activations returns); an SAE without any is left out."""
    return dict(db.con.execute("SELECT sae_id, count(*) FROM activations WHERE sae_id IN (SELECT unnest(?))"
                               " GROUP BY sae_id", [sae_ids]).fetchall())


def load_decoder(db: Store, sae_ids: list[int]) -> pl.DataFrame:
    return db.frame("SELECT sae_id, feature_id, unit_id, weight FROM decoder WHERE sae_id IN (SELECT unnest(?))",
                    [sae_ids])


def load_features(db: Store, sae_id: int) -> pl.DataFrame:
    return db.frame("SELECT feature_id, density, dead FROM features WHERE sae_id = ? ORDER BY feature_id", [sae_id])


def ranking_exists(db: Store, run_id: int) -> bool:
    return bool(db.scalar("SELECT count(*) FROM rankings JOIN saes USING (sae_id) WHERE run_id = ?", [run_id]))


def top_features(db: Store, sae_id: int, limit: int = 30) -> pl.DataFrame:
    """The best-ranked features with their first suggestion."""
    return db.frame(
        "SELECT rank, feature_id, round(score, 3) AS score, round(association, 3) AS association,"
        " round(mis, 3) AS mis, round(stability, 3) AS stability, suggestion FROM rankings"
        " WHERE sae_id = ? ORDER BY rank LIMIT ?",
        [sae_id, limit],
    )
