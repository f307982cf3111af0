"""The Validation screen, driven through Textual's Pilot on copies of the real app database.

The database (tests/app_data.py) holds run 1 with two SAEs and six automatically accepted, validated
labels on SAE 1. Every key of the screen is pressed here; validation itself runs for real (with a
quicker configuration than `mini validate`'s default).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

import engine.validation.validate_run
from engine.validation.labels import label_feature
from engine.validation.validate import ValidateConfig
from engine.validation.validation_text import trials_text
from store.db import Store
from tests.app_data import split_verdicts
from tests.pilot import notifications, run_app
from tests.pilot import settle as settle_rounds
from tui.app import MiniApp
from tui.screens.confirm import ConfirmScreen
from tui.screens.home import HomeScreen
from tui.screens.save_as import SaveAsScreen
from tui.screens.validation import ValidationScreen

QUICK = ValidateConfig(n_bootstrap=50, n_shifts=19, n_random_subsets=10, cv_folds=2)
"""Enough to exercise every step of validation in a few seconds."""


async def settle(app: MiniApp, pilot: Pilot) -> None:
    """Let the workers finish and their result messages be handled."""
    await settle_rounds(app, pilot, 3)


async def open_screen(app: MiniApp, pilot: Pilot) -> ValidationScreen:
    """Validation on run 1, its pairings loaded."""
    screen = ValidationScreen(app.stores, run_id=1, validate_config=QUICK, validate_jobs=1)
    app.push_screen(screen)
    await settle(app, pilot)
    return screen


async def export_report(app: MiniApp, pilot: Pilot) -> tuple[Screen[Any], str]:
    """Open Validation, press e and accept the path the prompt offers; returns the prompt and that path."""
    await open_screen(app, pilot)
    await pilot.press("e")
    await pilot.pause()
    prompt, offered = app.screen, app.screen.query_one("#path", Input).value
    await pilot.press("enter")
    await settle(app, pilot)
    return prompt, offered


def drive(path: Path, script: Callable[[MiniApp, Pilot], Coroutine[Any, Any, None]],
          size: tuple[int, int] = (80, 24)) -> MiniApp:
    return run_app(MiniApp(Store.open(path), run_id=1), script, size=size, before=settle)


def table_rows(screen: ValidationScreen) -> list[list[str]]:
    table = screen.query_one("#pairings", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(screen: ValidationScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with Store.open(path, read_only=True) as db:
        return db.con.execute(sql, params or []).fetchall()


def test_lists_every_accepted_label_with_its_stored_validation(app_db: Path) -> None:
    stored = query(app_db, "SELECT sae_id, feature_id, predicate, attempt, mcc, mcc_ci_low, mcc_ci_high, n_test_trials,"
                           " coalesce(generalises, false), coalesce(signature_specific, false)"
                           " FROM current_validations")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("validation")  # through the registry, as the palette does
        await settle(app, pilot)
        seen["screen"] = app.screen
        seen["rows"] = table_rows(app.screen)
        seen["summary"] = text_of(app.screen, "#summary")

    drive(app_db, script)
    assert isinstance(seen["screen"], ValidationScreen)
    rows = {row[0]: row for row in seen["rows"]}
    assert len(rows) == len(stored) == 6
    for sae_id, feature_id, predicate, attempt, mcc, low, high, trials, general, specific in stored:
        row = rows[f"{sae_id}·{feature_id}"]
        shown = predicate if len(predicate) <= 15 else predicate[:14] + "…"  # the list's label width at 80
        assert row[1] == shown and row[2] == str(attempt)
        few = "!" if trials is not None and trials < 10 else ""
        assert row[3] == f"{mcc:.2f} [{low:.2f}, {high:.2f}]{few}"
        assert row[5:7] == ["✓" if general else "✗", "✓" if specific else "✗"] and row[7].endswith("auto")
    # Generalising pairings first, validated (both verdicts) first among them, then by MCC.
    order = [(row[5] != "✓", row[6] != "✓", -float(row[3].split()[0])) for row in seen["rows"]]
    assert order == sorted(order)
    n_general = sum(row[-2] for row in stored)
    n_both = sum(row[-2] and row[-1] for row in stored)
    assert f"6 accepted labels, 6 tested: {n_general} gen, {n_both} gen+spec" in seen["summary"]
    assert f"SAE 1: 6 labels, 6 testable, {n_general} gen, {n_both} gen+spec" in seen["summary"]
    assert "SAE 2: no labels" in seen["summary"]
    assert "gen: MCC 95% CI > 0, q < 0.05 · spec: signature > random p95 · test split only" in seen["summary"]


def test_both_verdicts_the_attempt_p_at_the_floor_and_too_few_trials(app_db: Path) -> None:
    split = split_verdicts(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["rows"] = table_rows(screen)
        seen["summary"] = text_of(screen, "#summary")
        table = screen.query_one("#pairings", DataTable)
        for i, row in enumerate(seen["rows"]):
            table.move_cursor(row=i)
            await pilot.pause()
            seen[row[0]] = " ".join(text_of(screen, "#detail").split())

    drive(app_db, script)
    rows = {row[0]: row for row in seen["rows"]}
    general, both, duplicate = (f"1·{feature}" for feature in split)
    # Generalises, signature not specific: the two verdicts apart, at its second attempt.
    assert rows[general][2:] == ["2", "0.62 [0.51, 0.71]", "≤ 0.012", "✓", "✗", "auto"]
    assert rows[both][2:] == ["1", "0.55 [0.40, 0.66]!", "0.03", "✓", "✓", "auto"]
    assert rows[duplicate][5:] == ["✗", "✗", "dup auto"]
    assert [row[0] for row in seen["rows"][:2]] == [both, general]
    assert "6 tested: 2 gen, 1 gen+spec" in seen["summary"] and "spec only" not in seen["summary"]
    detail = seen[general]
    assert f"SAE 1 · feature {split.general} · rank" in detail and "· attempt 2" in detail
    assert "✓ generalises — MCC 0.62 [0.51, 0.71] over 24 test trials, q ≤ 0.012" in detail
    assert "✗ signature not specific — signature 0.80 vs random p95 0.85" in detail
    assert "generalises; signature not specific" not in detail  # the stored reason: the verdict lines say it
    assert "MCC 0.620 [0.510, 0.710] 24 test trials" in detail
    assert "p < 0.005 the ranking's null: shifts within test trials, or trial swaps (199 draws)" in detail  # 1/200
    assert "q ≤ 0.012" in detail and "0.005" not in detail.replace("< 0.005", "")
    assert "tuned on random subsets of this size" in detail
    detail = seen[both]
    assert "✓ generalises" in detail and "✓ signature-specific" in detail and "· attempt 1" in detail
    assert "6 test trials (too few for a reliable interval): read these intervals as rough" in detail
    assert "over 6 test trials (too few for a reliable interval)" in detail
    assert f"≈ weaker duplicate of SAE 1 feature {split.general} (MCC 0.62)" in seen[duplicate]
    assert "weaker duplicate" not in seen[general]


def test_detail_follows_the_cursor_and_shows_every_stored_number(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["first"] = text_of(screen, "#detail")
        await pilot.press("down")
        await pilot.pause()
        seen["second"] = text_of(screen, "#detail")
        seen["second_key"] = table_rows(screen)[1][0]
        await pilot.press("up")
        await pilot.pause()
        seen["back"] = text_of(screen, "#detail")

    drive(app_db, script)
    sae_id, feature_id = (int(x) for x in seen["second_key"].split("·"))
    (row,) = query(app_db, "SELECT tp, fp, fn, tn, mcc, mcc_ci_low, mcc_ci_high, balanced_accuracy_ci_low,"
                           " n_signature_units, reason, label_id, decode_signature, decode_random_p95, n_test_trials"
                           " FROM current_validations WHERE sae_id = ? AND feature_id = ?", [sae_id, feature_id])
    tp, fp, fn, tn, mcc, low, high, ba_low, n_units, reason, label_id, signature, p95, trials = row
    units = query(app_db, "SELECT unit_id FROM signatures WHERE label_id = ? AND in_signature", [label_id])
    detail = seen["second"]
    lines = [" ".join(line.split()) for line in detail.splitlines()]
    assert f"SAE {sae_id} · feature {feature_id}" in detail
    assert seen["first"] != detail and seen["back"] == seen["first"]
    assert f"feature on {tp:,} {fp:,}" in lines and f"feature off {fn:,} {tn:,}" in lines
    # The interval with the test trials behind it (its warning, when too few, on a line of its own).
    assert f"MCC {mcc:.3f} [{low:.3f}, {high:.3f}] {trials_text(trials).split(' (')[0]}" in lines
    assert f"{ba_low:.3f}" in detail
    assert "point values, no CI stored" in detail
    # Both verdicts, in the words the stored reason opens each part with (the detail does not repeat the reason).
    general, specific = (part.split(":")[0].split(" (")[0] for part in reason.split("; ")[:2])
    assert f"{general} — MCC" in detail and f"{specific} — signature" in detail, (general, specific)
    assert f"signature ({n_units} units)" in detail and f"{signature:.3f}" in detail and f"{p95:.3f}" in detail
    assert f"Neural signature: {len(units)} units" in detail and len(units) == n_units
    assert "auto: accepted automatically (top suggestion), not by a person" in detail


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Validation (the real one) starts only once the test sets this event, so what the screen shows
    while it runs is seen on any machine, however fast (on a quick CI runner it used to finish before
    the test's first look)."""
    event = threading.Event()
    real_validate_run = engine.validation.validate_run.validate_run

    def gated_validate_run(*args: Any, **kwargs: Any) -> Any:
        event.wait(timeout=60)
        return real_validate_run(*args, **kwargs)

    monkeypatch.setattr(engine.validation.validate_run, "validate_run", gated_validate_run)
    return event


def test_r_validates_labels_added_since_and_stores_their_rows(app_db: Path, gate: threading.Event) -> None:
    with Store.open(app_db) as db:
        new_id = label_feature(db, 1, 5, sae_id=2, accept=1)
        untestable_id = label_feature(db, 1, 9, sae_id=1, name='a "quoted" 🧠 label')
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["before"] = table_rows(screen)
        seen["summary_before"] = text_of(screen, "#summary")
        await pilot.press("r")
        await pilot.pause()
        seen["status"] = text_of(screen, "#status")
        await pilot.press("r")  # a second r while it runs starts nothing
        seen["notes_while_running"] = notifications(app)
        gate.set()
        await settle(app, pilot)
        seen["after"] = table_rows(screen)
        seen["summary_after"] = text_of(screen, "#summary")
        seen["validating"] = screen.validating
        seen["notes"] = notifications(app)

    drive(app_db, script)
    before = {row[0]: row for row in seen["before"]}
    assert before["2·5"][3] == "not validated yet" and before["1·9"][3] == "not validated yet"
    assert "2 accepted labels not validated yet: press r" in seen["summary_before"]
    # The name-only label is not testable, validated or not.
    assert "SAE 1: 7 labels, 6 testable" in seen["summary_before"]
    assert seen["status"].startswith("Validating run 1")
    assert "Validation is already running; its result will appear here." in seen["notes_while_running"]
    stored = {r[0]: r for r in query(app_db, "SELECT label_id, testable, mcc, reason FROM validations")}
    assert len(stored) == 8
    assert stored[new_id][1] is True and stored[new_id][2] is not None
    assert stored[untestable_id][1] is False and "not testable" in stored[untestable_id][3]
    after = {row[0]: row for row in seen["after"]}
    assert after["1·9"][3] == "not testable" and after["1·9"][1] == 'a "quoted" 🧠 l…'  # 15 cells at 80 columns
    assert after["2·5"][3].startswith(f"{stored[new_id][2]:.2f} [")
    assert "not validated yet" not in seen["summary_after"] and "SAE 2: 1 label, 1 testable" in seen["summary_after"]
    assert not seen["validating"]
    assert any(note.startswith("Run 1 on the test split: 8 labels, 7 testable: ")
               for note in seen["notes"])


def test_c_cancels_a_running_validation_and_nothing_of_it_is_stored(app_db: Path, gate: threading.Event) -> None:
    with Store.open(app_db) as db:
        label_feature(db, 1, 5, sae_id=2, accept=1)
    before = query(app_db, "SELECT label_id, mcc, created_at FROM validations ORDER BY label_id")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["c_enabled_idle"] = screen.check_action("cancel_validation", ())
        await pilot.press("c")  # nothing runs: nothing happens
        await pilot.pause()
        seen["notes_idle"] = notifications(app)
        await pilot.press("r")
        await pilot.pause()
        seen["c_enabled_running"] = screen.check_action("cancel_validation", ())
        await pilot.press("c")
        await pilot.pause()
        seen["status"] = text_of(screen, "#status")
        gate.set()  # validation starts only now, with c already pressed
        await settle(app, pilot)
        seen["validating"] = screen.validating
        seen["notes"] = notifications(app)
        seen["rows"] = table_rows(screen)

    drive(app_db, script)
    assert seen["c_enabled_idle"] is False and seen["notes_idle"] == []
    assert seen["c_enabled_running"] is True
    assert seen["status"].startswith("Cancelling the validation of run 1")
    assert not seen["validating"]
    assert any(note.startswith("Validation of run 1 cancelled after") and note.endswith("nothing was stored.")
               for note in seen["notes"]), seen["notes"]
    assert query(app_db, "SELECT label_id, mcc, created_at FROM validations ORDER BY label_id") == before
    assert {row[0]: row[3] for row in seen["rows"]}["2·5"] == "not validated yet"


def test_r_without_accepted_labels_says_what_to_do(app_db: Path) -> None:
    with Store.open(app_db) as db:
        for (feature_id,) in db.con.execute("SELECT feature_id FROM current_labels").fetchall():
            label_feature(db, 1, feature_id, sae_id=1, verdict="reject")
    before = query(app_db, "SELECT count(*) FROM validations")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["empty"] = text_of(screen, "#empty")
        seen["body_shown"] = screen.query_one("#body").display
        await pilot.press("r")
        await settle(app, pilot)
        seen["notes"] = notifications(app)

    drive(app_db, script)
    assert "No accepted labels in run 1 yet" in seen["empty"] and not seen["body_shown"]
    assert "Nothing to validate: accept labels in Review first." in seen["notes"]
    assert query(app_db, "SELECT count(*) FROM validations") == before


def test_e_exports_the_report_beside_the_database(app_db: Path) -> None:
    seen: dict[str, Any] = {}
    report = app_db.parent / "report_run1.md"

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["prompt"], seen["default"] = await export_report(app, pilot)
        seen["after"] = app.screen
        seen["notes"] = notifications(app)

    drive(app_db, script)
    assert isinstance(seen["prompt"], SaveAsScreen)
    assert seen["default"] == str(report)
    assert isinstance(seen["after"], ValidationScreen)
    text = report.read_text(encoding="utf-8")
    assert text.startswith("# mini report: run 1 on 'sample'") and "## Validations" in text
    assert (app_db.parent / "report_run1_tables" / "validations.csv").exists()
    assert any(note.startswith(f"Report written to {report} (6 validation attempts)") for note in seen["notes"])


def test_report_path_is_checked_in_place_and_a_file_is_replaced_only_after_yes(app_db: Path) -> None:
    report = app_db.parent / "report_run1.md"
    report.write_text("keep me", encoding="utf-8")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_screen(app, pilot)
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("ctrl+u", *"/no/such/folder/r.md", "enter")
        await pilot.pause()
        seen["error"] = str(app.screen.query_one("#error", Static).render())
        seen["still_asking"] = app.screen
        await pilot.press("ctrl+u", *str(report), "enter")
        await pilot.pause()
        seen["confirm"] = app.screen
        await pilot.press("n")  # keep the file: back in the path box
        await pilot.pause()
        seen["after_no"] = app.screen
        await pilot.press("escape")
        await settle(app, pilot)
        seen["kept"] = report.read_text(encoding="utf-8")
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)

    drive(app_db, script)
    assert seen["error"] == "path: there is no folder /no/such/folder"
    assert isinstance(seen["still_asking"], SaveAsScreen)
    assert isinstance(seen["confirm"], ConfirmScreen) and str(report) in seen["confirm"].question
    assert isinstance(seen["after_no"], SaveAsScreen)
    assert seen["kept"] == "keep me"
    assert report.read_text(encoding="utf-8").startswith("# mini report: run 1")


def test_tab_moves_to_the_detail_panel_and_escape_goes_back(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_screen(app, pilot)
        seen["focus"] = app.focused.id if app.focused else None
        await pilot.press("tab")
        seen["tabbed"] = app.focused.id if app.focused else None
        await pilot.press("down", "down")
        seen["scrolled"] = app.screen.query_one("#detail-box").scroll_y
        await pilot.press("tab")
        seen["back_to_list"] = app.focused.id if app.focused else None
        await pilot.press("escape")
        await pilot.pause()
        seen["after"] = app.screen

    drive(app_db, script)
    assert seen["focus"] == "pairings"
    assert seen["tabbed"] == "detail-box" and seen["scrolled"] == 2
    assert seen["back_to_list"] == "pairings"
    assert isinstance(seen["after"], HomeScreen)


def test_validation_in_worker_processes_is_announced_after_the_screen_closed(app_db: Path) -> None:
    """r runs joblib's process pool from inside the app (Textual holds sys.stderr: tui/process_pool.py);
    the person leaves the screen at once, and the outcome is still stored and announced."""
    with Store.open(app_db) as db:
        new_id = label_feature(db, 1, 5, sae_id=2, accept=1)
    before = query(app_db, "SELECT label_id, round(mcc, 9) FROM validations ORDER BY label_id")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.push_screen(ValidationScreen(app.stores, run_id=1, validate_config=QUICK, validate_jobs=2))
        await settle(app, pilot)
        await pilot.press("r", "escape")
        seen["screen"] = app.screen
        # The closed screen's worker is cancelled, but its thread runs to the end: wait for its word.
        for _ in range(1200):
            seen["notes"] = notifications(app)
            if any(note.startswith("Run 1") or "failed" in note for note in seen["notes"]):
                break
            await pilot.pause(0.1)

    drive(app_db, script)
    assert isinstance(seen["screen"], HomeScreen)
    assert any(note.startswith("Run 1 on the test split: 7 labels") for note in seen["notes"]), seen["notes"]
    after = query(app_db, "SELECT label_id, round(mcc, 9) FROM current_validations ORDER BY label_id")
    assert [row[0] for row in after] == [*(row[0] for row in before), new_id]
    # The MCC on test does not depend on the null's or the bootstrap's settings: the stored ones again.
    assert after[:-1] == before


def test_coming_back_to_the_screen_reads_labels_made_meanwhile(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_screen(app, pilot)
        seen["before"] = len(table_rows(screen))
        app.action_open("sql")  # any screen over this one; Review is where labels are usually made
        await settle(app, pilot)
        writer = app.db.for_thread()
        label_feature(writer, 1, 5, sae_id=2, accept=1)
        writer.close()
        await pilot.press("escape")
        await settle(app, pilot)
        seen["after"] = table_rows(screen)
        seen["screen"] = app.screen

    drive(app_db, script)
    assert isinstance(seen["screen"], ValidationScreen)
    assert seen["before"] == 6 and len(seen["after"]) == 7
    assert [seen["after"][-1][0], seen["after"][-1][3]] == ["2·5", "not validated yet"]


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.
