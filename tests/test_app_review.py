"""The Review screen, driven by its keys through Textual's Pilot on the real app database (tests/app_data.py):
run 1, SAE 1 ranked, its top six features auto-accepted and validated."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, Static

from store import Store
from tests.app_data import APP_VALIDATE, split_verdicts
from tests.pilot import Script, notifications, run_app, until
from tui.app import MiniApp
from tui.screens.features import FeaturesScreen
from tui.screens.label_dialog import LabelDialog, NoteDialog, read_label
from tui.screens.review import ReviewScreen

SIZE = (80, 24)
SAE = 1


def rank_order(path: Path) -> list[int]:
    with Store.open(path, read_only=True) as db:
        return [r[0] for r in db.con.execute("SELECT feature_id FROM rankings WHERE sae_id = ? ORDER BY rank",
                                             [SAE]).fetchall()]


def rows(path: Path, sql: str, params: list | None = None) -> list[dict]:
    with Store.open(path, read_only=True) as db:
        return db.frame(sql, params).to_dicts()


async def shown(pilot: Pilot, feature_id: int | None = None) -> ReviewScreen:
    """Wait until Review shows `feature_id` (any feature if None) with every panel filled."""
    screen = pilot.app.screen
    assert isinstance(screen, ReviewScreen)
    await until(pilot, lambda: screen.shown is not None and not screen._writer.busy and
                (feature_id is None or screen.shown.feature_id == feature_id))
    await pilot.pause()
    return screen


async def open_review(pilot: Pilot, **kwargs: Any) -> ReviewScreen:
    pilot.app.action_open("review", **kwargs)
    await pilot.pause()
    return await shown(pilot)


def drive(path: Path, script: Script, size=SIZE) -> MiniApp:
    async def before(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()

    return run_app(MiniApp(Store.open(path), run_id=1), script, size=size, before=before)


async def type_text(pilot: Pilot, text: str) -> None:
    """Type `text` as a terminal sends it: one key event per character, carrying the character.

    (Pilot.press cannot type characters outside Textual's own key names, such as emoji.)"""
    from textual import events
    from textual.keys import _character_to_key

    for character in text:
        event = events.Key(_character_to_key(character), character)
        event.set_sender(pilot.app)
        pilot.app._driver.send_message(event)
        await pilot.pause()


def text_of(screen: ReviewScreen, selector: str) -> str:
    """What a Static shows, as plain text (its lines are never cut here)."""
    console = Console(width=2000, record=True, file=io.StringIO())
    console.print(screen.query_one(selector, Static).content)
    return console.export_text()


# -- opening and moving --------------------------------------------------------------------------------


def test_opens_at_the_first_unlabelled_feature_with_every_panel_filled(app_db: Path) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        panel = screen.shown
        seen.update(feature=panel.feature_id, rank=panel.rank, info=text_of(screen, "#info"),
                    suggestions=len(panel.suggestions), trace=panel.trace, tuning=panel.tuning,
                    examples=panel.top_examples, units=panel.units, source=panel.units_source,
                    label=panel.label)

    drive(app_db, script)
    # The six top features carry the demo's automatic labels: Review starts at rank 7.
    assert seen["feature"] == order[6] and seen["rank"] == 7
    assert f"#{order[6]}" in seen["info"] and "rank 7/64" in seen["info"] and "no label yet" in seen["info"]
    assert seen["label"] is None and seen["suggestions"] >= 1
    trace = seen["trace"]
    assert trace.activation.max() > 0 and trace.peak in trace.example_ids and trace.context is not None
    assert seen["tuning"] and seen["examples"].height > 0 and seen["units"].height > 0
    assert seen["source"] == "decoder"  # no validated signature for an unlabelled feature
    # Nothing from the test split is shown: it is kept for validation.
    assert set(seen["examples"]["split"]) <= {"train", "val"}


def test_j_k_g_G_move_in_rank_order(app_db: Path) -> None:
    order = rank_order(app_db)
    visited: list[int] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=order[0])
        visited.append(screen.shown.feature_id)
        for key, expected in (("j", 1), ("j", 2), ("k", 1), ("G", 63), ("k", 62), ("g", 0)):
            await pilot.press(key)
            visited.append((await shown(pilot, order[expected])).shown.feature_id)
        await pilot.press("k")  # already first: stays
        visited.append((await shown(pilot)).shown.feature_id)

    drive(app_db, script)
    assert visited == [order[i] for i in (0, 1, 2, 1, 63, 62, 0, 0)]


def test_the_next_feature_is_prefetched_and_shown_from_the_cache(app_db: Path) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=order[10])
        # Read ahead a moment after the feature shows (READ_AHEAD_AFTER_S), so as not to slow its drawing.
        await until(pilot, lambda: {order[9], order[11], order[12]} <= set(screen._cache) and not screen._loading)
        seen["cached"] = set(screen._cache)
        cached_panel = screen._cache[order[11]]
        await pilot.press("j")
        seen["same_object"] = screen.shown is cached_panel

    drive(app_db, script)
    assert {order[9], order[11], order[12]} <= seen["cached"]
    assert seen["same_object"], "j showed the prefetched panel without reading it again"


def test_a_label_interrupts_the_read_ahead_and_the_neighbours_are_read_after_it(app_db: Path, monkeypatch) -> None:
    """A label is what the person waits for; the read ahead gives way to it and is done again afterwards."""
    import threading

    import engine.analysis.review as review

    order = rank_order(app_db)
    real_load = review.load_feature
    stalled, outcome = threading.Event(), {}
    stall = {order[12]}  # the first read ahead once order[11] shows: it runs a query of minutes, once

    def load_feature(db, context, feature_id):
        if feature_id in stall:
            stall.discard(feature_id)
            stalled.set()
            try:
                db.con.execute("SELECT sum(i) FROM range(1000000000000) t(i)").fetchall()
            except Exception as error:
                outcome["error"] = str(error)
                raise
        return real_load(db, context, feature_id)

    monkeypatch.setattr(review, "load_feature", load_feature)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=order[11])
        await until(pilot, stalled.is_set)  # reading ahead, inside the long query
        await pilot.press("x")
        await until(pilot, lambda: screen.last_saved is not None)
        seen["saved"] = screen.last_saved.feature_id
        await until(pilot, lambda: screen.shown is not None and screen.shown.feature_id == order[12])
        await until(pilot, lambda: {order[11], order[13]} <= set(screen._cache) and not screen._loading)
        seen["notes"] = notifications(app)

    drive(app_db, script)
    assert seen["saved"] == order[11]
    assert "INTERRUPT" in outcome["error"]  # the query of minutes was stopped, not waited for
    assert not [n for n in seen["notes"] if "Could not read" in n], seen["notes"]
    assert rows(app_db, "SELECT verdict FROM current_labels WHERE sae_id = 1 AND feature_id = ?", [order[11]]) == [
        {"verdict": "reject"}]


# -- labelling keys -------------------------------------------------------------------------------------


def test_1_accepts_the_first_suggestion_commits_one_row_and_moves_on(app_db: Path) -> None:
    order = rank_order(app_db)
    before = rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"]
    first = rows(app_db, "SELECT predicate FROM suggestions WHERE sae_id = 1 AND feature_id = ? AND position = 1",
                 [order[6]])[0]["predicate"]
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        await pilot.press("1")
        seen["next"] = (await shown(pilot, order[7])).shown.feature_id
        # Committed before the screen moved on: another cursor sees it now.
        with app.stores.cursor() as db:
            seen["row"] = db.frame("SELECT * FROM labels ORDER BY label_id DESC LIMIT 1").to_dicts()[0]
        seen["status"] = text_of(screen, "#info")

    drive(app_db, script)
    row = seen["row"]
    assert (row["feature_id"], row["sae_id"], row["verdict"], row["name"], row["predicate"], row["source"]) == (
        order[6], SAE, "accept", first, first, "person")
    assert seen["next"] == order[7]
    assert f"saved label {row['label_id']}" in seen["status"]
    assert rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"] == before + 1
    current = rows(app_db, "SELECT verdict, name FROM current_labels WHERE sae_id = 1 AND feature_id = ?", [order[6]])
    assert current == [{"verdict": "accept", "name": first}]


@pytest.mark.parametrize(("key", "verdict"), [("x", "reject"), ("question_mark", "unsure")])
def test_x_and_question_mark_record_their_verdict_and_move_on(app_db: Path, key: str, verdict: str) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_review(pilot)
        await pilot.press(key)
        seen["next"] = (await shown(pilot, order[7])).shown.feature_id

    drive(app_db, script)
    assert seen["next"] == order[7]
    last = rows(app_db, "SELECT feature_id, verdict, name, predicate FROM labels ORDER BY label_id DESC LIMIT 1")
    assert last == [{"feature_id": order[6], "verdict": verdict, "name": None, "predicate": None}]


def test_a_number_beyond_the_suggestions_says_so_and_writes_nothing(app_db: Path) -> None:
    order = rank_order(app_db)
    with Store.open(app_db) as db:  # this feature keeps two suggestions
        db.con.execute("DELETE FROM suggestions WHERE sae_id = 1 AND feature_id = ? AND position > 2", [order[6]])
    before = rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"]
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        for key in ("3", "9"):
            await pilot.press(key)
            await pilot.pause()
        seen["messages"] = [n.message for n in app._notifications]
        seen["feature"] = screen.shown.feature_id
        await pilot.press("2")  # the second exists
        seen["after"] = (await shown(pilot, order[7])).shown.feature_id

    drive(app_db, script)
    assert seen["feature"] == order[6], "stayed on the feature"
    assert sum("has only 2 suggestions: nothing saved" in m for m in seen["messages"]) == 2
    labels = rows(app_db, "SELECT feature_id, name FROM labels ORDER BY label_id")
    assert len(labels) == before + 1 and labels[-1]["feature_id"] == order[6]


def test_keys_pressed_while_a_label_is_written_apply_in_order(app_db: Path) -> None:
    order = rank_order(app_db)

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_review(pilot)
        await pilot.press("1", "x", "question_mark")
        await shown(pilot, order[9])

    drive(app_db, script)
    last = rows(app_db, "SELECT feature_id, verdict FROM labels ORDER BY label_id DESC LIMIT 3")
    assert last[::-1] == [{"feature_id": order[6], "verdict": "accept"}, {"feature_id": order[7], "verdict": "reject"},
                          {"feature_id": order[8], "verdict": "unsure"}]


def test_a_label_survives_an_immediate_quit(app_db: Path) -> None:
    order = rank_order(app_db)

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_review(pilot)
        await pilot.press("1", "q")

    app = drive(app_db, script)
    assert app.return_code == 0
    # The app has closed the file; a new process-like open sees the committed row.
    last = rows(app_db, "SELECT feature_id, verdict, source FROM labels ORDER BY label_id DESC LIMIT 1")
    assert last == [{"feature_id": order[6], "verdict": "accept", "source": "person"}]


# -- undo -------------------------------------------------------------------------------------------------


def test_undo_restores_no_label_and_keeps_the_table_append_only(app_db: Path) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        await pilot.press("x")
        await shown(pilot, order[7])
        await pilot.press("u")  # back to the rejected feature, as it was: no label
        seen["back_on"] = (await shown(pilot, order[6])).shown.feature_id
        seen["label"] = screen.shown.label
        seen["info"] = text_of(screen, "#info")
        await pilot.press("u")  # nothing left to undo from this screen
        await pilot.pause()
        seen["messages"] = [n.message for n in app._notifications]

    drive(app_db, script)
    assert seen["back_on"] == order[6] and seen["label"] is None and "no label yet" in seen["info"]
    assert any("Nothing to undo" in m for m in seen["messages"])
    history = rows(app_db, "SELECT l.label_id, l.verdict, u.label_id IS NOT NULL AS undone FROM labels l"
                           " LEFT JOIN label_undos u USING (label_id) WHERE l.feature_id = ? AND l.sae_id = 1", [order[6]])
    assert [(r["verdict"], r["undone"]) for r in history] == [("reject", True)]
    assert rows(app_db, "SELECT * FROM current_labels WHERE sae_id = 1 AND feature_id = ?", [order[6]]) == []


def test_undo_restores_the_previous_label_with_its_validation(app_db: Path) -> None:
    order = rank_order(app_db)
    auto = rows(app_db, "SELECT label_id FROM current_labels WHERE sae_id = 1 AND feature_id = ?", [order[0]])[0]
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=order[0])
        seen["before"] = text_of(screen, "#info")
        await pilot.press("x")  # a person rejects the automatic label…
        await shown(pilot, order[1])
        await pilot.press("u")  # …and takes it back
        await shown(pilot, order[0])
        seen["after"] = text_of(screen, "#info")
        seen["label"] = screen.shown.label

    drive(app_db, script)
    assert seen["label"]["label_id"] == auto["label_id"] and seen["label"]["source"] == "auto"
    # the validation line comes back as it was (after it, a note of what was undone)
    def verdict(info: str) -> list[str]:
        return [line.split("  ·  ")[0] for line in info.splitlines() if " generalises " in line]
    assert verdict(seen["before"]) and verdict(seen["before"]) == verdict(seen["after"])
    assert "(auto)" in seen["after"]
    current = rows(app_db, "SELECT label_id, verdict FROM current_labels WHERE sae_id = 1 AND feature_id = ?",
                   [order[0]])
    assert current == [{"label_id": auto["label_id"], "verdict": "accept"}]


# -- typing a label and a note -----------------------------------------------------------------------------

LONG = "a place cell that fires " + "and keeps firing " * 40 + "at the end of the track"


@pytest.mark.parametrize("name", ['the "reach" cell, it\'s odd', "reward 🐭🧀 ✓", LONG],
                         ids=["quotes", "emoji", "long"])
def test_l_round_trips_quotes_emoji_and_long_text(app_db: Path, name: str) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await type_text(pilot, name[:40])  # typed from the keyboard …
        app.screen.query_one("#name", Input).insert_text_at_cursor(name[40:])  # … the rest as if pasted
        await pilot.press("enter")
        await shown(pilot, order[7])
        await pilot.press("k")
        await shown(pilot, order[6])
        seen["info"] = text_of(screen, "#info")
        seen["label"] = screen.shown.label

    drive(app_db, script)
    stored = rows(app_db, "SELECT name, predicate, verdict FROM labels ORDER BY label_id DESC LIMIT 1")[0]
    assert stored == {"name": name, "predicate": None, "verdict": "accept"}
    assert seen["label"]["name"] == name
    assert name[:30] in seen["info"]


def test_l_with_a_predicate_is_testable_and_a_bad_predicate_is_refused_inline(app_db: Path) -> None:
    order = rank_order(app_db)
    before = rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"]
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_review(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await pilot.press(*"fast running", "tab", *"speed in [20, x)", "enter")
        seen["error"] = str(app.screen.query_one("#predicate-error", Static).render())
        seen["still_open"] = isinstance(app.screen, LabelDialog)
        box = app.screen.query_one("#predicate", Input)
        box.value = ""
        await pilot.press(*"speed in [20, 35)", "enter")
        await shown(pilot, order[7])

    drive(app_db, script)
    assert seen["still_open"] and "predicate 'speed in [20, x)'" in seen["error"] and "numbers" in seen["error"]
    stored = rows(app_db, "SELECT name, predicate, variable, low, high FROM labels ORDER BY label_id DESC LIMIT 1")
    assert stored == [{"name": "fast running", "predicate": "speed in [20, 35)", "variable": "speed", "low": 20.0,
                       "high": 35.0}]
    assert rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"] == before + 1


CONJUNCTION = "position in [0.2, 0.5) and condition = 1"
BY_SQL = {  # where each clause holds, read straight from natural_values
    "position in [0.2, 0.5)": "variable = 'position' AND value >= 0.2 AND value < 0.5",
    "condition = 1": "variable = 'condition' AND category = '1'",
    "house_light = 1": "variable = 'house_light' AND value = 1",
}


def holds_by_sql(path: Path, predicate: str) -> set[int]:
    """The examples where every clause of `predicate` (clauses of BY_SQL) holds."""
    query = " INTERSECT ".join(f"SELECT example_id FROM natural_values WHERE {BY_SQL[clause]}"
                               for clause in predicate.split(" and "))
    return {r["example_id"] for r in rows(path, query)}


def test_l_with_a_conjunction_stores_it_and_a_bad_one_is_refused_inline(app_db: Path) -> None:
    order = rank_order(app_db)
    before = rows(app_db, "SELECT * FROM labels ORDER BY label_id")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await pilot.press(*"run zone", "tab", *"position in [0.2, 0.5) and position in [0.6, 0.7)", "enter")
        seen["error"] = str(app.screen.query_one("#predicate-error", Static).render())
        seen["still_open"] = isinstance(app.screen, LabelDialog)
        await pilot.press("escape")  # nothing written for the bad one
        await until(pilot, lambda: app.screen is screen)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await pilot.press(*"run zone", "tab", *CONJUNCTION)
        seen["outcome"] = str(app.screen.query_one("#outcome", Static).render())
        await pilot.press("enter")
        await shown(pilot, order[7])
        await pilot.press("k")  # back to it: its trace is drawn against the conjunction now
        panel = (await shown(pilot, order[6])).shown
        seen["trace"] = (panel.trace.context, panel.trace.example_ids, panel.trace.holds)

    drive(app_db, script)
    assert seen["still_open"] and seen["error"] == (
        "predicate 'position in [0.2, 0.5) and position in [0.6, 0.7)': 'position' appears in two clauses; "
        "give each variable once")
    assert seen["outcome"] == f"will be validated as: {CONJUNCTION}"
    after = rows(app_db, "SELECT feature_id, name, predicate, variable, value, low, high FROM labels ORDER BY label_id")
    assert len(after) == len(before) + 1  # the conjunction, and nothing for the refused one
    assert after[-1] == {"feature_id": order[6], "name": "run zone", "predicate": CONJUNCTION,
                         "variable": "position and condition", "value": None, "low": None, "high": None}
    context, examples, holds = seen["trace"]
    expected = holds_by_sql(app_db, CONJUNCTION)
    assert context == CONJUNCTION and holds.tolist() == [int(e) in expected for e in examples]


def test_predicate_holds_evaluates_a_conjunction_as_the_data_say(app_db: Path) -> None:
    from engine.analysis.review import dataset_arrays, predicate_holds

    with Store.open(app_db, read_only=True) as db:
        dataset = db.frame("SELECT * FROM datasets").to_dicts()[0]
        data = dataset_arrays(db, dataset)
    every = np.arange(data.n_examples)
    conjunctions = (CONJUNCTION, f"{CONJUNCTION} and house_light = 1")
    for predicate in conjunctions:
        expected = np.isin(every, list(holds_by_sql(app_db, predicate)))
        holds = predicate_holds(data, {"predicate": predicate}, every)
        assert 0 < expected.sum() < len(every) and np.array_equal(holds, expected), predicate
    # A clause more holds on fewer examples; a text that does not parse holds nowhere.
    assert predicate_holds(data, {"predicate": conjunctions[1]}, every).sum() < \
        predicate_holds(data, {"predicate": conjunctions[0]}, every).sum()
    assert not predicate_holds(data, {"predicate": "condition = 1 and mood = 1"}, every).any()


def test_l_completes_a_known_predicate_and_escape_writes_nothing(app_db: Path) -> None:
    order = rank_order(app_db)
    first = rows(app_db, "SELECT predicate FROM suggestions WHERE sae_id = 1 AND feature_id = ? AND position = 1",
                 [order[6]])[0]["predicate"]
    before = rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"]
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await pilot.press("l")
        await until(pilot, lambda: isinstance(app.screen, LabelDialog))
        await pilot.press(*first[:4])
        await pilot.pause(0.2)  # the suggester answers in a worker
        await pilot.press("right")  # take the completion
        seen["value"] = app.screen.query_one("#name", Input).value
        seen["outcome"] = str(app.screen.query_one("#outcome", Static).render())
        await pilot.press("enter")
        await shown(pilot, order[7])

    drive(app_db, script)
    # This feature's own suggestions complete first; a valid predicate as a name is also its predicate.
    assert seen["value"] == first and first in seen["outcome"]
    stored = rows(app_db, "SELECT name, predicate FROM labels ORDER BY label_id DESC LIMIT 1")
    assert stored == [{"name": first, "predicate": first}]
    assert rows(app_db, "SELECT count(*) AS n FROM labels")[0]["n"] == before + 1  # escape wrote nothing


def test_read_label_splits_name_and_predicate_and_names_the_bad_field() -> None:
    kinds = {"speed": "continuous", "condition": "categorical"}
    assert read_label("fast | speed in [20, 35)", "", kinds)[0].predicate == "speed in [20, 35)"
    assert read_label("condition = 3", "", kinds)[0].predicate == "condition = 3"
    assert read_label("just a name", "", kinds)[0].predicate is None
    assert read_label("  ", "", kinds)[1].startswith("name:")
    entry, _, error = read_label("x", "condition in [1, 2)", kinds)
    assert entry is None and "categorical" in error


def test_n_adds_a_note_to_the_current_label_and_stays(app_db: Path) -> None:
    order = rank_order(app_db)
    note = 'looks like "condition 2" only during the run 🏃'
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=order[0])
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, NoteDialog))
        await pilot.press("enter")  # empty: refused inline
        seen["error"] = str(app.screen.query_one("#note-error", Static).render())
        await type_text(pilot, note)
        await pilot.press("enter")
        await until(pilot, lambda: screen.shown is not None and screen.shown.label["note"] == note)
        seen["feature"] = screen.shown.feature_id
        seen["info"] = text_of(screen, "#info")

    drive(app_db, script)
    assert seen["error"].startswith("note:")
    assert seen["feature"] == order[0] and note in seen["info"]
    history = rows(app_db, "SELECT verdict, name, predicate, source, note FROM labels WHERE sae_id = 1"
                           " AND feature_id = ? ORDER BY label_id", [order[0]])
    # The note rides on a copy of the automatic label: still auto, not made a person's by a note.
    assert len(history) == 2 and history[1] == {**history[0], "note": note}
    assert history[1]["source"] == "auto"


# -- validation ------------------------------------------------------------------------------------------


def test_v_validates_the_accepted_label_now_and_refuses_without_one(app_db: Path) -> None:
    order = rank_order(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, validate_config=APP_VALIDATE)
        await pilot.press("v")  # no label yet
        await pilot.pause()
        seen["refused"] = [n.message for n in app._notifications]
        await pilot.press("1")
        await shown(pilot, order[7])
        await pilot.press("k")
        await shown(pilot, order[6])
        await pilot.press("v")
        await until(pilot, lambda: screen._validating is None and screen.shown is not None
                    and screen.shown.validation is not None, timeout=120)
        seen["info"] = text_of(screen, "#info")
        seen["label_id"] = screen.shown.label["label_id"]

    drive(app_db, script)
    assert any("no accepted label with a predicate" in m for m in seen["refused"])
    stored = rows(app_db, "SELECT label_id, testable, q_value, generalises, signature_specific, attempt"
                          " FROM validations WHERE feature_id = ? AND sae_id = 1", [order[6]])
    assert [r["label_id"] for r in stored] == [seen["label_id"]] and stored[0]["testable"]
    # Both verdicts, narrow (80 columns): marks before their names, then the attempt.
    marks = ["✓" if stored[0][key] else "✗" for key in ("generalises", "signature_specific")]
    assert f"{marks[0]} generalises {marks[1]} specific · attempt {stored[0]['attempt']}" in seen["info"]
    # q is corrected over the run's stored validations (six before, seven now), not a lone p-value.
    assert len(rows(app_db, "SELECT label_id FROM validations")) == 7


def test_validate_label_gives_what_validate_run_gave(app_db: Path) -> None:
    from engine.validation.validate_run import validate_label

    before = rows(app_db, "SELECT * EXCLUDE (created_at, validation_id) FROM validations WHERE label_id = 2")[0]
    with Store.open(app_db) as db:
        after = validate_label(db, 1, 2, APP_VALIDATE)
    # A new row (attempts are appended), the same test (its attempt number kept) and the same figures.
    assert after.pop("validation_id") > rows(app_db, "SELECT min(validation_id) AS v FROM validations")[0]["v"]
    after.pop("created_at")
    assert after == before


def test_the_validation_line_shows_both_verdicts_the_attempt_and_the_trials(app_db: Path) -> None:
    split = split_verdicts(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        for feature_id in (split.general, split.both, split.duplicate):
            screen = await open_review(pilot, feature_id=feature_id)
            await shown(pilot, feature_id)
            seen[feature_id] = text_of(screen, "#info").splitlines()[2]
            await pilot.press("escape")
            await pilot.pause()

    drive(app_db, script, size=(160, 40))  # wide: the verdicts in words
    assert seen[split.general].startswith(
        "generalises ✓ · signature not specific ✗ · attempt 2 · MCC 0.62 [0.51, 0.71] (24 test trials) · q ≤ 0.012")
    assert seen[split.both].startswith(
        "generalises ✓ · signature-specific ✓ · attempt 1 · MCC 0.55 [0.40, 0.66] (6 test trials, too few for a"
        " reliable interval) · q 0.03")
    assert seen[split.duplicate].startswith("does not generalise ✗ · signature not specific ✗ · attempt 1")
    assert "weaker duplicate" in seen[split.duplicate] and "weaker duplicate" not in seen[split.general]
    narrow: dict[str, Any] = {}

    async def at_80(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=split.both)
        await shown(pilot, split.both)
        narrow["line"] = text_of(screen, "#info").splitlines()[2]

    drive(app_db, at_80)  # 80 columns: marks before short names, the trials only when too few
    assert narrow["line"].startswith("✓ generalises ✓ specific · attempt 1 · MCC 0.55 [0.40, 0.66] q 0.03 6 trials!")
    assert len(narrow["line"].rstrip()) <= 78


# -- panels and going back -------------------------------------------------------------------------------


def test_t_switches_between_examples_and_units_and_escape_goes_back(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("features")
        await until(pilot, lambda: isinstance(app.screen, FeaturesScreen) and app.screen.features.height
                    and app.focused is app.screen.query_one("#features"))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen))
        screen = await shown(pilot)
        examples, units = screen.query_one("#examples"), screen.query_one("#units")
        seen["before"] = (examples.display, units.display)
        await pilot.press("t")
        await pilot.pause()
        seen["after"] = (examples.display, units.display)
        await pilot.press("escape")
        await pilot.pause()
        seen["back"] = app.screen

    drive(app_db, script)
    assert seen["before"] == (True, False) and seen["after"] == (False, True)
    assert isinstance(seen["back"], FeaturesScreen)


def test_no_ranking_says_how_to_make_one(app_db: Path) -> None:
    with Store.open(app_db) as db:
        db.con.execute("DELETE FROM rankings")
    seen: dict[str, str] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("review")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.context is not None)
        await pilot.pause()
        seen["info"] = text_of(app.screen, "#info")

    drive(app_db, script)
    assert "no ranking yet" in seen["info"] and "mini rank --run 1" in seen["info"]


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.


# -- the store behind the screen ---------------------------------------------------------------------------


def test_the_ordered_copy_of_activations_is_rebuilt_when_the_sae_changes(app_db: Path) -> None:
    from store.review import (
        activations_by_feature_current,
        ensure_activations_by_feature,
        feature_activations,
    )

    with Store.open(app_db) as db:
        assert not activations_by_feature_current(db, SAE)
        assert ensure_activations_by_feature(db, SAE) == db.scalar("SELECT count(*) FROM activations WHERE sae_id = 1")
        assert ensure_activations_by_feature(db, SAE) is None  # current: nothing to do
        feature = int(db.scalar("SELECT feature_id FROM rankings WHERE sae_id = 1 AND rank = 1"))
        fast, scanned = (feature_activations(db, SAE, feature, by_feature=b) for b in (True, False))
        assert (fast[0] == scanned[0]).all() and (fast[1] == scanned[1]).all() and len(fast[0]) > 0
        # The SAE's activations change (as when a run is resumed): the copy no longer counts as current.
        db.con.execute("DELETE FROM activations WHERE sae_id = 1 AND feature_id = ?", [feature])
        assert not activations_by_feature_current(db, SAE)
        ensure_activations_by_feature(db, SAE)
        assert len(feature_activations(db, SAE, feature, by_feature=True)[0]) == 0


def test_only_the_current_label_can_be_undone(app_db: Path) -> None:
    from engine.validation.labels import label_feature
    from store.errors import StoreError
    from store.labels import undo_label

    order = rank_order(app_db)
    with Store.open(app_db) as db:
        first = label_feature(db, 1, order[6], sae_id=SAE, verdict="unsure")
        second = label_feature(db, 1, order[6], sae_id=SAE, verdict="reject")
        with pytest.raises(StoreError, match="not the current label"):
            undo_label(db, first)
        undo_label(db, second)
        undo_label(db, first)
        with pytest.raises(StoreError, match="not the current label"):
            undo_label(db, first)  # already undone
        assert db.scalar("SELECT count(*) FROM current_labels WHERE sae_id = 1 AND feature_id = ?", [order[6]]) == 0
        assert db.scalar("SELECT count(*) FROM labels WHERE sae_id = 1 AND feature_id = ?", [order[6]]) == 2


# -- the tuning panel: split tuning, peri-event histogram, every bin reachable -------------------------------


def continuous_feature(path: Path) -> int:
    """The best-ranked feature whose first suggestion is a range of a continuous variable."""
    return rows(path, "SELECT r.feature_id FROM rankings r JOIN suggestions s USING (sae_id, feature_id)"
                      " WHERE r.sae_id = 1 AND s.position = 1 AND s.low IS NOT NULL ORDER BY r.rank LIMIT 1"
                )[0]["feature_id"]


def test_tuning_keys_reach_the_last_bin_and_cycle_split_and_event(app_db: Path) -> None:
    from tui.widgets.tuning_panel import TuningPanel

    feature = continuous_feature(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_review(pilot, feature_id=feature)
        tuning = screen.query_one(TuningPanel)
        await pilot.pause()
        seen["first_title"] = tuning.border_title
        await pilot.press("s")  # tuning → split
        await pilot.pause()
        seen["split_title"] = tuning.border_title
        seen["split_text"] = tuning.plain
        seen["splits"] = [s.split_by for s in screen.shown.splits]
        spans = [tuning.bins_in_view()]
        for _ in range(40):  # page down until the last bin is in view
            if spans[-1] is None or spans[-1][2] == spans[-1][3]:
                break
            await pilot.press("right_square_bracket")
            await pilot.pause()
            spans.append(tuning.bins_in_view())
        seen["spans"], seen["last_title"] = spans, tuning.border_title
        shown_by = []
        for _ in seen["splits"]:
            shown_by.append(tuning.plain.splitlines()[0])
            await pilot.press("b")
            await pilot.pause()
        seen["shown_by"], seen["wrapped"] = shown_by, tuning.plain.splitlines()[0]
        await pilot.press("e")
        await pilot.pause()
        seen["peri_text"], seen["peri_title"] = tuning.plain, tuning.border_title
        await pilot.press("s")  # peri → back to the tuning bars
        await pilot.pause()
        seen["back"] = tuning.view

    drive(app_db, script)
    assert "bins 1–" in seen["first_title"] and "↓" in seen["first_title"]  # 6 rows of 10 bins: a hint
    # Four sparklines (one per level, every bin in each) fill the 7 rows: the rows of numbers lie below.
    assert seen["split_title"].startswith("Split · ") and "↓" in seen["split_title"]
    first, last = seen["spans"][0], seen["spans"][-1]
    assert first[1] in (0, 1) and last[2] == last[3] == first[3] >= 10  # paged to the last bin
    assert seen["last_title"].endswith("↑") and f"of {last[3]}" in seen["last_title"]
    # Sample: condition, phase, reward and house light can split; each is shown once, then it wraps around.
    assert len(seen["splits"]) >= 3 and len(set(seen["splits"])) == len(seen["splits"])
    assert [f" by {s} " in line + " " for s, line in zip(seen["splits"], seen["shown_by"], strict=True)] == [
        True] * len(seen["splits"])
    assert seen["wrapped"] == seen["shown_by"][0]
    assert seen["peri_text"].startswith("around reward") and "events" in seen["peri_text"]
    assert seen["back"] == "tuning"


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_tuning_panel_snapshot(app_db: Path, snap_compare, size: tuple[int, int]) -> None:
    feature = continuous_feature(app_db)

    async def run_before(pilot: Pilot) -> None:
        await pilot.app.workers.wait_for_complete()
        await open_review(pilot, feature_id=feature)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        pilot.app.clear_notifications()
        await pilot.press("s")  # the split view, with its hint
        await pilot.pause()

    assert snap_compare(MiniApp(Store.open(app_db), run_id=1), terminal_size=size, run_before=run_before)
