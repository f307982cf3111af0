"""Labels: one row per labelling action, committed the moment it is made.

The table is append-only: a new verdict on a feature is a new row, and `current_labels` shows the
latest one per feature, so the history of every decision stays queryable.
"""

from __future__ import annotations

from dataclasses import dataclass

from store.db import Store
from store.errors import StoreError


@dataclass(frozen=True)
class Label:
    sae_id: int
    feature_id: int
    verdict: str
    """accept, reject or unsure."""
    name: str | None = None
    """What the person calls the feature (free text; may hold quotes, emoji, anything)."""
    predicate: str | None = None
    """The natural-feature predicate it is tested against (`condition = 3`); None: not testable."""
    variable: str | None = None
    value: str | None = None
    low: float | None = None
    high: float | None = None
    source: str = "person"
    """person, or auto (the demo's automatic acceptance of top suggestions)."""
    note: str | None = None


def add_label(db: Store, label: Label) -> int:
    """Append one labelling action and commit it; returns its label_id."""
    with db.transaction():
        # The feature is checked by the INSERT itself: one statement fewer on every labelling key.
        rows = db.con.execute(
            "INSERT INTO labels (sae_id, feature_id, verdict, name, predicate, variable, value, low, high, source,"
            " note) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM features"
            " WHERE sae_id = ? AND feature_id = ?) RETURNING label_id",
            [label.sae_id, label.feature_id, label.verdict, label.name, label.predicate, label.variable,
             label.value, label.low, label.high, label.source, label.note, label.sae_id, label.feature_id],
        ).fetchall()
        if not rows:
            raise StoreError(f"{db.path}: SAE {label.sae_id} has no feature {label.feature_id}")
    return int(rows[0][0])


def add_label_if_open(db: Store, run_id: int, label: Label) -> int | None:
    """Append one labelling action in a single statement (so a single commit) when the label's SAE belongs
    to run `run_id`, has the feature, and the run's labels are not frozen; returns its label_id, or None
    when any of that fails (the caller then finds out which, to say so).

    Review commits a label on every key press, after the person's pause: each statement then costs about
    a millisecond more than in a tight loop (cold caches), so the checks ride in the INSERT, and the
    feature is checked against the SAE's width (a run's saes and features rows are written together, one
    features row per latent) rather than by a join with `features`."""
    rows = db.con.execute(
        "INSERT INTO labels (sae_id, feature_id, verdict, name, predicate, variable, value, low, high, source,"
        " note) SELECT s.sae_id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM saes s LEFT JOIN label_freezes f"
        " ON f.run_id = s.run_id AND f.frozen_at IS NOT NULL WHERE s.sae_id = ? AND s.run_id = ?"
        " AND ? BETWEEN 0 AND s.d_sae - 1 AND f.run_id IS NULL RETURNING label_id",
        [label.feature_id, label.verdict, label.name, label.predicate, label.variable, label.value, label.low,
         label.high, label.source, label.note, label.sae_id, run_id, label.feature_id],
    ).fetchall()
    return int(rows[0][0]) if rows else None


def labels_exist(db: Store, run_id: int) -> bool:
    return bool(db.scalar("SELECT count(*) FROM labels JOIN saes USING (sae_id) WHERE run_id = ?", [run_id]))


def label_run_id(db: Store, label_id: int) -> int | None:
    """The run whose feature the label is on; None when there is no such label."""
    return db.scalar("SELECT s.run_id FROM labels l JOIN saes s USING (sae_id) WHERE l.label_id = ?", [label_id])


def get_label(db: Store, label_id: int) -> dict:
    return db.frame("SELECT * FROM labels WHERE label_id = ?", [label_id]).to_dicts()[0]


def run_sae_features(db: Store, run_id: int) -> dict[int, int] | None:
    """The run's SAE ids in instance order, each with how many features (latents) it has; None when there
    is no such run. (One light query: labelling reads it on every key press.)"""
    rows = db.con.execute("SELECT r.run_id, s.sae_id, (SELECT count(*) FROM features f WHERE f.sae_id = s.sae_id)"
                          " FROM runs r LEFT JOIN saes s USING (run_id) WHERE r.run_id = ? ORDER BY s.instance",
                          [run_id]).fetchall()
    return {sae: n for _, sae, n in rows if sae is not None} if rows else None


def suggestion(db: Store, sae_id: int, feature_id: int, position: int) -> dict:
    """The feature's Nth suggestion, or a StoreError saying how many it has."""
    result = db.con.execute("SELECT * FROM suggestions WHERE sae_id = ? AND feature_id = ? AND position = ?",
                            [sae_id, feature_id, position])
    columns = [d[0] for d in result.description]
    rows = [dict(zip(columns, row, strict=True)) for row in result.fetchall()]
    if rows:
        return rows[0]
    count = db.scalar("SELECT count(*) FROM suggestions WHERE sae_id = ? AND feature_id = ?", [sae_id, feature_id])
    hint = f"it has {count}" if count else "it has none: run `mini rank` first"
    raise StoreError(f"feature {feature_id} of SAE {sae_id} has no suggestion {position} ({hint})")


def undo_label(db: Store, label_id: int) -> None:
    """Undo one labelling action: the feature's current label becomes what it was before it.

    Nothing is deleted or rewritten: the action stays in `labels` and a row in `label_undos` marks it
    undone, so current_labels shows the earlier label with its own label_id (and so its validation), or
    no label when there was none, and the history of what was done stays queryable (migration 6 says
    why this is not a copy of the earlier row). Only a feature's current label can be undone, so undos
    unwind in the order the actions were taken.
    """
    with db.transaction():
        rows = db.con.execute("SELECT sae_id, feature_id FROM labels WHERE label_id = ?", [label_id]).fetchall()
        if not rows:
            raise StoreError(f"{db.path}: no label {label_id}")
        sae_id, feature_id = rows[0]
        current = db.con.execute("SELECT label_id FROM current_labels WHERE sae_id = ? AND feature_id = ?",
                                 [sae_id, feature_id]).fetchall()
        if not current or current[0][0] != label_id:
            raise StoreError(f"label {label_id} is not the current label of feature {feature_id} of SAE {sae_id};"
                             " undo the later one first")
        db.con.execute("INSERT INTO label_undos (label_id, sae_id, feature_id) VALUES (?, ?, ?)",
                       [label_id, sae_id, feature_id])
