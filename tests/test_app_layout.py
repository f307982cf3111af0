"""Every screen laid out for 80×24 and 120×40 (issue 17): the footer keeps each screen's essential keys
and says that f1 has the rest, no predicate is cut inside its range, a table wider than the terminal
says that it scrolls sideways, and a snapshot of every screen and dialog at both sizes.

The screens are opened as a person opens them (tests/app_screens.py) on tests/app_data.py's database.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from store import Store
from tests.app_screens import SCREENS, SIZES, screen_text
from tui.app import MiniApp
from tui.predicate_text import fit, readable, wrap
from tui.widgets.key_footer import ALL_KEYS, KeyFooter, fit_keys
from tui.widgets.scroll_hint import hint_text

ESSENTIAL = 6
"""A screen's first FOOTER_KEYS never give way, even at 80 columns."""
CUT_RANGE = re.compile(r"\[[^\]\)\n]*…")
"""A range whose end is cut off: `[0.533, 0…`."""


def app_on(app_db: Path, monkeypatch: pytest.MonkeyPatch) -> MiniApp:
    """The app opened by a relative name, so the header shows no temporary path."""
    monkeypatch.chdir(app_db.parent)
    return MiniApp(Store.open(Path(app_db.name)), run_id=1, dataset="sample")


def look(app: MiniApp, name: str, size: tuple[int, int]) -> dict:
    """Open screen `name` at `size`; what is on the terminal, and facts of the screen's widgets."""
    seen: dict = {}

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await SCREENS[name](pilot)
            screen = pilot.app.screen
            seen["text"] = screen_text(pilot.app)
            footers = list(screen.query(KeyFooter))
            seen["footer"] = footers[0].shown_actions if footers else None
            seen["footer_keys"] = getattr(screen, "FOOTER_KEYS", ())
            seen["active"] = {binding.action for _, binding, enabled, _ in screen.active_bindings.values()
                              if binding.show and enabled}
            from textual.widgets import DataTable
            from textual_fastdatatable import DataTable as FastTable

            seen["wide_tables"] = [table.id for table in [*screen.query(DataTable), *screen.query(FastTable)]
                                   if table.display and table.max_scroll_x > 0]

    asyncio.run(main())
    return seen


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("name", list(SCREENS))
def test_every_screen_keeps_its_essentials_at_80x24_and_120x40(app_db: Path, monkeypatch: pytest.MonkeyPatch,
                                                               name: str, size: str) -> None:
    width, height = SIZES[size]
    seen = look(app_on(app_db, monkeypatch), name, (width, height))
    lines = seen["text"].splitlines()
    assert len(lines) == height and all(len(line) <= width for line in lines)
    cut = CUT_RANGE.search(seen["text"])
    assert cut is None, f"a range is cut on {name} at {size}: {cut.group()!r}\n{seen['text']}"
    if seen["footer"] is not None:  # a full screen (dialogs have their keys in their border)
        footer = lines[-1]
        assert "f1" in footer, footer
        essentials = [action for action in seen["footer_keys"][:ESSENTIAL]
                      if any(action in (shown, shown.split("(")[0]) for shown in seen["active"])]
        missing = [action for action in essentials
                   if not any(action in (shown, shown.split("(")[0]) for shown in seen["footer"])]
        assert not missing, f"{name} at {size} lost {missing} from its footer: {footer!r}"
        if len(seen["footer"]) < len(seen["active"] - {"command_palette"}):
            assert f"f1 {ALL_KEYS}" in footer, footer  # keys gave way: the footer says where they are
    if seen["wide_tables"]:
        assert "more columns →" in seen["text"], f"{name} at {size}: {seen['wide_tables']} scroll unannounced"


def test_review_keeps_validate_back_and_help_at_80_columns(app_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: Review's footer ended at `n`, and v, esc and f1 were not shown."""
    footer = look(app_on(app_db, monkeypatch), "review", (80, 24))["text"].splitlines()[-1]
    for words in ("j Next", "1-9 Accept", "l Label", "x Reject", "v Validate", "esc Back", f"f1 {ALL_KEYS}"):
        assert words in footer, footer


def keys_on_features(app_db: Path, monkeypatch: pytest.MonkeyPatch, *keys: str) -> dict[str, Any]:
    """Features at 80×24: the screen's text before and after pressing `keys`, and then the cursor row
    and the detail panel."""
    app = app_on(app_db, monkeypatch)
    seen: dict[str, Any] = {}

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await SCREENS["features"](pilot)
            seen["before"] = screen_text(pilot.app)
            await pilot.press(*keys)
            await pilot.pause(0.3)
            seen["after"] = screen_text(pilot.app)
            screen = pilot.app.screen
            seen["detail"] = str(screen.query_one("#detail").render())
            seen["row"] = screen.view.row(0, named=True)

    asyncio.run(main())
    return seen


def test_the_features_table_says_it_scrolls_and_the_cursor_row_shows_its_predicates_whole(
        app_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = keys_on_features(app_db, monkeypatch, "right", "right", "right")
    assert "more columns →  (→ scrolls)" in seen["before"]
    assert "← more columns" in seen["after"]
    assert seen["row"]["suggestion"] in seen["detail"] and f"#{seen['row']['feature_id']}" in seen["detail"]


def test_sorting_on_a_column_off_to_the_right_scrolls_it_into_view(app_db: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """At 80 columns the density is off-screen; sorting on it (s, five times) brings it into view."""
    seen = keys_on_features(app_db, monkeypatch, *"sssss")
    assert "density %" not in seen["before"]
    assert "sort density ↓" in seen["after"] and "density %" in seen["after"]
    assert "← more columns" in seen["after"]


# -- the pieces --------------------------------------------------------------------------------------------


def test_fit_cuts_predicates_between_terms_and_keeps_the_range() -> None:
    predicate = "position in [0.533333, 0.866667) and direction = decreasing"
    assert readable(predicate) == "position in [0.533, 0.867) and direction = decreasing"
    assert fit(predicate, 60) == "position in [0.533, 0.867) and direction = decreasing"
    assert fit(predicate, 30) == "position in [0.533, 0.867) +1"
    assert fit(predicate, 24) == "po… in [0.533, 0.867) +1"
    assert fit(predicate, 22) == "pos… in [0.533, 0.867)"  # the +1 gives way before the range does
    for width in range(20, 60):  # from the range's own width (and one cell of the name) up
        assert CUT_RANGE.search(fit(predicate, width)) is None and len(fit(predicate, width)) <= width
    assert fit("direction = decreasing", 22) == "direction = decreasing"
    assert fit(None, 10) == ""


def test_readable_rounds_long_numbers_only() -> None:
    assert readable("speed in [12.3456, 1234.56)") == "speed in [12.3, 1235)"
    assert readable("x in [0.000123456, 5)") == "x in [0.000123, 5)"
    assert readable("x in [60, 80)") == "x in [60, 80)"
    assert readable("spikes{1}.x2 = 0.5") == "spikes{1}.x2 = 0.5"  # names keep their digits
    assert readable("y in [-0.25, inf)") == "y in [-0.25, inf)"


def test_wrap_breaks_between_terms_never_inside_a_range() -> None:
    predicate = "position in [0.533333, 0.866667) and direction = decreasing"
    assert wrap(predicate, 26) == ["position in [0.533, 0.867)", "and direction = decreasing"]
    for width in range(14, 40):
        lines = wrap(predicate, width)
        assert " ".join(lines) == readable(predicate)
        assert all(len(line) <= width for line in lines), (width, lines)
        assert not any(line.endswith("[0.533,") for line in lines)


def test_fit_keys_drops_the_least_important_first_and_always_keeps_help() -> None:
    entries = [("step(1)", "j", "Next"), ("step(-1)", "k", "Prev"), ("note", "n", "Note"),
               ("validate", "v", "Validate"), ("back", "esc", "Back"), ("help", "f1", "Help"), ("quit", "q", "Quit")]
    shown, compact, palette = fit_keys(entries, ("step(1)", "validate", "back"), 200, 12)
    assert shown == list(range(7)) and not compact and palette
    shown, compact, palette = fit_keys(entries, ("step(1)", "validate", "back"), 44, 12)
    assert compact and not palette
    kept = [entries[i][0] for i in shown]
    assert kept[:1] == ["step(1)"] and {"validate", "back", "help"} <= set(kept) and "note" not in kept
    assert shown == sorted(shown)  # the screen's own order
    assert [entries[i][0] for i in fit_keys(entries, (), 1, 12)[0]] == ["help"]


def test_the_scroll_hint_says_which_way_the_hidden_columns_are() -> None:
    assert hint_text(0, 0) == ""
    assert hint_text(0, 40).startswith("more columns →")
    assert hint_text(20, 40).startswith("← more columns →")
    assert hint_text(40, 40).startswith("← more columns") and "→ (" not in hint_text(40, 40)


# -- snapshots ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", list(SIZES), ids=list(SIZES))
@pytest.mark.parametrize("name", list(SCREENS))
def test_snapshot(app_db: Path, monkeypatch: pytest.MonkeyPatch, snap_compare, name: str, size: str) -> None:
    async def run_before(pilot: Pilot) -> None:
        await SCREENS[name](pilot)

    assert snap_compare(app_on(app_db, monkeypatch), terminal_size=SIZES[size], run_before=run_before)
