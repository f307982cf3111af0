"""Label freezes: a run's labels fixed before its test results are read (preregistration), and blind runs.

One row of `label_freezes` per run that was ever made blind or frozen. The rules (who may blind, freeze,
label or validate when) live in engine.validation.freezes; this module only reads and writes the rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from store.db import Store


class FreezeState(NamedTuple):
    """Where a run stands: blind, frozen, both or neither."""

    blind_since: datetime | None
    """When the run was made blind (its test results hidden until its labels are frozen); None: never."""
    frozen_at: datetime | None
    """When its labels were frozen; None: they can still change."""
    n_attempts_seen: int
    """Validation attempts of the run stored before the freeze (0 when not frozen, or frozen before any)."""

    @property
    def blind(self) -> bool:
        """Test results are hidden now: blind and not yet frozen."""
        return self.blind_since is not None and self.frozen_at is None

    @property
    def frozen(self) -> bool:
        return self.frozen_at is not None


OPEN = FreezeState(None, None, 0)
"""A run never blinded or frozen."""


def freeze_state(db: Store, run_id: int) -> FreezeState:
    rows = db.con.execute("SELECT blind_since, frozen_at, n_attempts_seen FROM label_freezes WHERE run_id = ?",
                          [run_id]).fetchall()
    return FreezeState(*rows[0]) if rows else OPEN


def attempt_count(db: Store, run_id: int) -> int:
    """Validation attempts stored for the run's labels (every row of `validations`: attempts are kept)."""
    return int(db.scalar("SELECT count(*) FROM validations v JOIN saes s USING (sae_id) WHERE s.run_id = ?",
                         [run_id]))


def accepted_label_count(db: Store, run_id: int) -> int:
    """Features of the run whose current label is an accept."""
    return int(db.scalar("SELECT count(*) FROM current_labels c JOIN saes s USING (sae_id)"
                         " WHERE s.run_id = ? AND c.verdict = 'accept'", [run_id]))


def mark_blind(db: Store, run_id: int) -> FreezeState:
    """Record that the run is blind from now on; returns its new state."""
    with db.transaction():
        db.con.execute("INSERT INTO label_freezes (run_id, blind_since) VALUES (?, current_timestamp)"
                       " ON CONFLICT (run_id) DO UPDATE SET blind_since = excluded.blind_since", [run_id])
    return freeze_state(db, run_id)


def mark_frozen(db: Store, run_id: int) -> FreezeState:
    """Freeze the run's labels now, counting the validation attempts stored before it in the same
    transaction; returns its new state."""
    with db.transaction():
        seen = attempt_count(db, run_id)
        db.con.execute("INSERT INTO label_freezes (run_id, frozen_at, n_attempts_seen)"
                       " VALUES (?, current_timestamp, ?) ON CONFLICT (run_id) DO UPDATE"
                       " SET frozen_at = excluded.frozen_at, n_attempts_seen = excluded.n_attempts_seen",
                       [run_id, seen])
    return freeze_state(db, run_id)


def all_freezes(db: Store) -> list[dict[str, Any]]:
    """Every run's freeze row (run_id, blind_since, frozen_at, n_attempts_seen), by run: for `mini info`."""
    return db.records("SELECT run_id, blind_since, frozen_at, n_attempts_seen FROM label_freezes ORDER BY run_id")
