"""Ranking from inside the app (tui/ranking.py): Features' `R`, the palette's `Rank run N` and Train's offer
open the Rank dialog; the ranking runs in the background with a progress line, `c` cancels it, and
Features and Review keep answering keys meanwhile. On the real app database (tests/app_data.py: run 1,
two SAEs of 64 features), with the real engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from textual.pilot import Pilot
from textual.widgets import Button, Input, Static

from engine.analysis.associations import AssociationConfig
from engine.analysis.mis import MISConfig
from engine.analysis.rank import RankConfig
from store import Store
from tests.pilot import notifications, palette_search, run_app, until
from tui.app import MiniApp
from tui.screens.features import FeaturesScreen
from tui.screens.rank_dialog import RankDialog
from tui.screens.review import ReviewScreen
from tui.widgets.arrow_table import ArrowTable

SIZE = (80, 24)
QUICK = RankConfig(associations=AssociationConfig(n_shuffles=19, max_shuffles=19, max_conjunction_levels=0),
                   mis=MISConfig(n_tasks=10))
"""Ranks the fixture's run in about a second (the defaults take about 25 s an SAE there)."""
WAIT = 120


def stored_ranking(path: Path) -> pl.DataFrame:
    with Store.open(path, read_only=True) as db:
        return db.frame("SELECT sae_id, feature_id, rank, score, suggestion FROM rankings ORDER BY sae_id, rank")


def rank_epoch(path: Path) -> dict[str, Any] | None:
    with Store.open(path, read_only=True) as db:
        rows = db.frame("SELECT where_sql, around FROM analysis_epochs WHERE run_id = 1 AND step = 'rank'")
    return rows.to_dicts()[0] if rows.height else None


def unrank(path: Path) -> None:
    with Store.open(path) as db:
        db.con.execute("DELETE FROM rankings")


def drive(path: Path, script, *, config: RankConfig | None = QUICK, run_id: int | None = 1) -> MiniApp:
    async def before(app: MiniApp, pilot: Pilot) -> None:
        app.rank_config = config
        await app.workers.wait_for_complete()

    return run_app(MiniApp(Store.open(path), run_id=run_id), script, size=SIZE, before=before)


def text(screen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def open_features(app: MiniApp, pilot: Pilot) -> FeaturesScreen:
    app.action_open("features")
    await until(pilot, lambda: isinstance(app.screen, FeaturesScreen) and app.screen.sae_id is not None)
    await pilot.pause()
    return app.screen


async def open_dialog(app: MiniApp, pilot: Pilot, key: str = "R") -> RankDialog:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, RankDialog) and app.screen.facts is not None)
    await pilot.pause()
    return app.screen


def ranking_ended(app: MiniApp) -> bool:
    return app.ranking is not None and not app.ranking.running


def test_r_ranks_an_unranked_run_from_features_and_shows_the_ranked_table(app_db: Path) -> None:
    unrank(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        features = await open_features(app, pilot)
        seen["before"] = text(features, "#empty")
        dialog = await open_dialog(app, pilot)
        seen["about"] = text(dialog, "#about")
        seen["button"] = str(dialog.query_one("#rank", Button).label)
        await pilot.press("enter")  # in the --where box: rank with the options as they are (none)
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        await until(pilot, lambda: features.features.height > 0)
        await pilot.pause()
        seen["screen"] = app.screen
        seen["rows"] = features.query_one(ArrowTable).row_count
        seen["status_shown"] = features.query_one("#rank-status").display
        seen["notes"] = notifications(app)

    drive(app_db, script)
    assert "no ranking yet: press R to rank run 1" in seen["before"]
    assert "Rank the 2 SAEs of run 1" in seen["about"] and seen["button"] == "Rank"
    assert seen["screen"].__class__ is FeaturesScreen and seen["rows"] == 64
    assert seen["status_shown"] is False  # the progress line goes once the ranking is stored
    assert any(note.startswith("Ranked 2 SAEs of run 1 in ") for note in seen["notes"])
    assert stored_ranking(app_db).group_by("sae_id").len().sort("sae_id")["len"].to_list() == [64, 64]


def test_cancel_mid_way_stores_nothing(app_db: Path) -> None:
    """With the defaults (about 25 s an SAE): the progress line names the SAE and the stage, `c` stops the
    ranking inside the first SAE's shuffles, and the run stays unranked."""
    unrank(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        features = await open_features(app, pilot)
        await open_dialog(app, pilot)
        await pilot.press("enter")
        await until(pilot, lambda: "associations" in text(features, "#rank-status"), timeout=WAIT)
        seen["line"] = text(features, "#rank-status")
        seen["footer_c"] = features.check_action("cancel_ranking", ())
        await pilot.press("c")
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        await pilot.pause()
        seen["state"] = app.ranking
        seen["empty"] = text(features, "#empty")
        seen["footer_c_after"] = features.check_action("cancel_ranking", ())

    drive(app_db, script, config=None)
    assert seen["line"] == "Ranking run 1: SAE 1 of 2 · associations (c cancels)"
    assert seen["footer_c"] is True and seen["footer_c_after"] is False
    assert seen["state"].status == "cancelled"
    assert seen["state"].message == "Ranking of run 1 cancelled after 0 of 2 SAEs; nothing of it was stored."
    assert "no ranking yet" in seen["empty"]
    assert stored_ranking(app_db).height == 0


def test_features_and_review_answer_keys_while_a_ranking_runs(app_db: Path, monkeypatch) -> None:
    """A re-ranking with the defaults runs while `s` sorts Features, `]` switches SAE, and Review opens and
    `j` moves on; cancelled at the end, it leaves the stored ranking as it was.

    The ranking is held inside its first SAE (its tuning curves wait for a gate the test opens after `c`), so
    that it is still running whatever the machine's speed."""
    import threading

    import engine.analysis.rank

    gate = threading.Event()
    curves = engine.analysis.rank.tuning_curves

    def held_curves(*args, **kwargs):
        gate.wait(120)
        return curves(*args, **kwargs)

    monkeypatch.setattr(engine.analysis.rank, "tuning_curves", held_curves)
    before = stored_ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        features = await open_features(app, pilot)
        await until(pilot, lambda: features.features.height > 0)
        dialog = await open_dialog(app, pilot)
        seen["button"] = str(dialog.query_one("#rank", Button).label)
        seen["about"] = text(dialog, "#about")
        await pilot.press("enter")
        await until(pilot, lambda: "associations" in text(features, "#rank-status"), timeout=WAIT)
        await pilot.press("s")
        await until(pilot, lambda: "sort score" in text(features, "#summary"), timeout=5)
        await pilot.press("]")
        await until(pilot, lambda: features.sae_id == 2 and features.features.height > 0, timeout=5)
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.context is not None
                    and app.screen.context.order, timeout=5)
        review = app.screen
        first = review._current()
        await pilot.press("j")
        await until(pilot, lambda: review._current() != first, timeout=5)
        seen["still_running"] = app.ranking is not None and app.ranking.running
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is features)
        await pilot.press("c")
        gate.set()
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        seen["state"] = app.ranking.status

    drive(app_db, script, config=None)
    assert seen["button"] == "Re-rank" and "ranked already (on all bins)" in seen["about"]
    assert seen["still_running"] is True
    assert seen["state"] == "cancelled"
    assert stored_ranking(app_db).equals(before)


def test_palette_rank_run_n_opens_the_dialog_then_features(app_db: Path) -> None:
    unrank(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["prompts"] = await palette_search(pilot, "rank run 1", "Rank run 1")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, RankDialog) and app.screen.facts is not None)
        seen["dialog_run"] = app.screen.run_id
        await pilot.press("enter")
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        await until(pilot, lambda: isinstance(app.screen, FeaturesScreen) and app.screen.features.height > 0)
        seen["screen"] = (type(app.screen), app.screen.run_id, app.run_id)

    drive(app_db, script, run_id=None)
    assert seen["prompts"][0].startswith("Rank run 1")
    assert seen["dialog_run"] == 1
    assert seen["screen"] == (FeaturesScreen, 1, 1)
    assert stored_ranking(app_db).height == 128


def test_rerank_with_where_changes_the_stored_epoch_and_bad_options_are_said_in_the_dialog(app_db: Path) -> None:
    assert rank_epoch(app_db) is None
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        features = await open_features(app, pilot)
        dialog = await open_dialog(app, pilot)
        dialog.query_one("#around", Input).focus()
        await pilot.press(*"speed:1", "enter")
        await pilot.pause()
        seen["error"] = (isinstance(app.screen, RankDialog), text(dialog, "#rank-error"))
        dialog.query_one("#around", Input).value = ""
        dialog.query_one("#where", Input).focus()
        await pilot.press(*"speed > 2", "enter")
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        await until(pilot, lambda: "ranked on epoch: speed > 2" in text(features, "#summary"))
        seen["summary"] = text(features, "#summary")
        seen["notes"] = notifications(app)

    drive(app_db, script)
    assert seen["error"] == (True, "--around speed:1: expected EVENT:START,STOP in seconds, e.g. "
                                   "move_onset:-0.25,0.25")
    assert any(note.startswith("Ranked 2 SAEs of run 1 on epoch speed > 2 in ") for note in seen["notes"])
    assert rank_epoch(app_db) == {"where_sql": "speed > 2", "around": None}


def test_a_where_the_data_refuses_fails_in_one_sentence_and_keeps_the_ranking(app_db: Path) -> None:
    before = stored_ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_features(app, pilot)
        await open_dialog(app, pilot)
        await pilot.press(*"nonesuch > 1", "enter")
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        seen["state"] = app.ranking

    drive(app_db, script)
    assert seen["state"].status == "failed"
    assert seen["state"].message.startswith('Ranking run 1 failed: --where "nonesuch > 1": ')
    assert "\n" not in seen["state"].message
    assert stored_ranking(app_db).equals(before)


def test_train_offers_to_rank_the_run_it_finished(app_db: Path) -> None:
    from tests.test_app_train import TINY, fill
    from tui.screens.train import TrainScreen

    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("train")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        train = app.screen
        assert isinstance(train, TrainScreen)
        seen["offered_before"] = train.check_action("rank_run", ())
        await fill(app, pilot, TINY)
        await pilot.press("ctrl+s")
        await until(pilot, lambda: train.last_run_id is not None and not train.training, timeout=WAIT)
        await pilot.pause()
        seen["status"] = text(train, "#train-status")
        seen["button"] = train.query_one("#rank-now").has_class("-shown")
        await open_dialog(app, pilot, "r")
        seen["dialog_run"] = app.screen.run_id
        await pilot.press("enter")
        await until(pilot, lambda: ranking_ended(app), timeout=WAIT)
        await until(pilot, lambda: isinstance(app.screen, FeaturesScreen) and app.screen.features.height > 0)
        seen["features"] = (app.screen.run_id, app.screen.features.height)

    async def before(app: MiniApp, pilot: Pilot) -> None:
        app.rank_config = QUICK
        await app.workers.wait_for_complete()

    run_app(MiniApp(Store.open(app_db), dataset="sample"), script, size=SIZE, before=before)
    assert seen["offered_before"] is False
    assert "Run 2 finished" in seen["status"] and "Rank run 2 now? Press r." in seen["status"]
    assert seen["button"] is True and seen["dialog_run"] == 2
    assert seen["features"] == (2, 16)
    with Store.open(app_db, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM rankings JOIN saes USING (sae_id) WHERE run_id = 2") == 16
