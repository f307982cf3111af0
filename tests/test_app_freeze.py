"""Freezing labels in the app, driven through Textual's Pilot on copies of the real app database: `F` on
the Validation screen asks first, `r` and Review's `v` refuse on a blind run, Review's keys refuse once
the labels are frozen."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from engine.validation.freezes import blind_run, freeze_labels
from engine.validation.validate import ValidateConfig
from store import Store
from tests.pilot import notifications, run_app, settle, until
from tui.app import MiniApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.review import ReviewScreen
from tui.screens.validation import ValidationScreen

QUICK = ValidateConfig(n_bootstrap=50, n_shifts=19, n_random_subsets=10, cv_folds=2)
TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d"


def query(path: Path, sql: str) -> list[tuple]:
    with Store.open(path, read_only=True) as db:
        return db.con.execute(sql).fetchall()


def live(app: MiniApp, sql: str) -> list[tuple]:
    """A query on the app's own connection, while it holds the file."""
    with app.stores.cursor() as db:
        return db.con.execute(sql).fetchall()


def blind_unvalidated(path: Path) -> None:
    """Run 1 as it was before its first validation (the app database comes validated), made blind."""
    with Store.open(path) as db:
        with db.transaction():
            for table in ("validations", "signatures"):
                db.con.execute(f"DELETE FROM {table}")
            db.con.execute("DELETE FROM analysis_epochs WHERE step = 'validate'")
        blind_run(db, 1)


def test_f_freezes_after_yes_and_r_refuses_on_a_blind_run(app_db: Path) -> None:
    blind_unvalidated(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = ValidationScreen(app.stores, run_id=1, validate_config=QUICK, validate_jobs=1)
        app.push_screen(screen)
        await settle(app, pilot, 3)
        seen["blind_line"] = str(screen.query_one("#freeze", Static).render())
        await pilot.press("r")
        await settle(app, pilot, 2)
        seen["validating_after_r"] = screen.validating
        seen["notes_after_r"] = notifications(app)
        seen["rows_after_r"] = live(app, "SELECT count(*) FROM validations")
        await pilot.press("F")
        await pilot.pause()
        seen["asked"] = app.screen
        await pilot.press("n")  # no: nothing changes
        await settle(app, pilot, 2)
        seen["after_no"] = live(app, "SELECT frozen_at FROM label_freezes")
        await pilot.press("F")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot, 2)
        await until(pilot, lambda: screen.freeze is not None and screen.freeze.frozen)
        seen["frozen_line"] = str(screen.query_one("#freeze", Static).render())
        seen["notes_after_freeze"] = notifications(app)
        await pilot.press("r")  # frozen: validation reads the test split now
        await until(pilot, lambda: not screen.validating, timeout=120)
        await settle(app, pilot, 3)
        await pilot.press("F")  # a second freeze is refused without asking
        await pilot.pause()
        seen["screen_after_second_f"] = app.screen
        seen["notes"] = notifications(app)

    run_app(MiniApp(Store.open(app_db), run_id=1), script)
    assert re.fullmatch(rf"blind since {TIME}: test results hidden until the labels are frozen \(F freezes\)",
                        seen["blind_line"]), seen["blind_line"]
    assert not seen["validating_after_r"] and seen["rows_after_r"] == [(0,)]
    assert ("Run 1 is blind: its labels must be frozen before the test split is read (`mini freeze --run 1`)"
            in seen["notes_after_r"])
    assert isinstance(seen["asked"], ConfirmScreen) and "Freeze the labels of run 1?" in seen["asked"].question
    assert seen["after_no"] == [(None,)]
    assert re.fullmatch(rf"labels frozen at {TIME}, before any test result was seen", seen["frozen_line"])
    assert any(re.fullmatch(rf"Run 1: labels frozen at {TIME}, before any test result was seen; they can no "
                            r"longer change\.", note) for note in seen["notes_after_freeze"])
    (frozen_at, seen_attempts), = query(app_db, "SELECT frozen_at, n_attempts_seen FROM label_freezes")
    assert frozen_at is not None and seen_attempts == 0
    assert query(app_db, "SELECT count(*) FROM validations") == [(6,)]
    assert not isinstance(seen["screen_after_second_f"], ConfirmScreen)
    assert any(re.fullmatch(rf"Run 1's labels were frozen at {TIME}; they can no longer change\.", note)
               for note in seen["notes"])


def test_review_keys_refuse_on_a_frozen_run_and_v_on_a_blind_one(app_db: Path) -> None:
    blind_unvalidated(app_db)
    labels_before = query(app_db, "SELECT count(*) FROM labels")
    (feature,), = query(app_db, "SELECT min(feature_id) FROM current_labels WHERE sae_id = 1 AND verdict = 'accept'")
    seen: dict[str, Any] = {"feature": feature}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        app.action_open("review", feature_id=feature)
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        await until(pilot, lambda: screen.shown is not None and screen.shown.feature_id == feature
                    and not screen._writer.busy)
        await pilot.press("v")  # blind: refused, nothing computed
        await until(pilot, lambda: screen._validating is None and any("is blind" in n for n in notifications(app)))
        seen["notes_blind"] = notifications(app)
        with app.stores.cursor() as db:  # the app owns the file: freeze as `F` would, on its connection
            freeze_labels(db, 1)
        await pilot.press("x")  # reject: refused
        await until(pilot, lambda: any("Nothing saved" in n for n in notifications(app)))
        seen["notes"] = notifications(app)

    run_app(MiniApp(Store.open(app_db), run_id=1), script)
    assert query(app_db, "SELECT count(*) FROM validations") == [(0,)]
    assert any(note.endswith("run 1 is blind: its labels must be frozen before the test split is read "
                             "(`mini freeze --run 1`)") for note in seen["notes_blind"]), seen["notes_blind"]
    assert any(re.fullmatch(rf"Nothing saved for feature {seen['feature']}: run 1's labels were frozen at {TIME}; "
                            "they can no longer change", note) for note in seen["notes"]), seen["notes"]
    assert query(app_db, "SELECT count(*) FROM labels") == labels_before
