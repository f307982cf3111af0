"""Every screen and dialog of the app, opened on tests/app_data.py's database the way a person gets there,
and held still for a picture: the layout tests and snapshots at 80×24 and 120×40 use these.

Each opener leaves the app idle, with nothing on screen that depends on timing (no blinking cursors,
no toasts, tables sized to their rows).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable

from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from tests.pilot import columns_sized, until
from tui.app import MiniApp

Opener = Callable[[Pilot], Awaitable[None]]
WIDE_QUERY = ("SELECT r.sae_id, r.rank, r.feature_id, round(r.score, 4) AS score, r.suggestion, r.reason, "
              "f.density FROM rankings r JOIN features f USING (sae_id, feature_id) ORDER BY r.sae_id, r.rank "
              "LIMIT 30")
"""More columns than 80 cells hold: the SQL results scroll sideways."""


def screen_text(app: MiniApp) -> str:
    """The whole terminal as plain text, as a person sees it (the same frame a snapshot pictures)."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), color_system=None, record=True,
                      legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def still(pilot: Pilot) -> None:
    """Let the work finish, stop cursors blinking, drop toasts, and let every table size its columns."""
    app = pilot.app
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()
    for box in app.screen.query(Input):
        box.cursor_blink = False
    for area in app.screen.query(TextArea):
        area.cursor_blink = False
    app.clear_notifications()
    from textual.widgets import DataTable
    from textual_fastdatatable import DataTable as FastTable

    for table in [*app.screen.query(DataTable), *app.screen.query(FastTable)]:
        if table.display:
            await columns_sized(pilot, table)
    await pilot.pause()


async def home(pilot: Pilot) -> None:
    app = pilot.app
    await until(pilot, lambda: app.screen.query_one("#runs").display)
    await still(pilot)


async def features(pilot: Pilot) -> None:
    from tui.screens.features import FeaturesScreen

    await home(pilot)
    pilot.app.action_open("features")
    await until(pilot, lambda: isinstance(pilot.app.screen, FeaturesScreen) and pilot.app.screen.features.height)
    await still(pilot)


async def review(pilot: Pilot) -> None:
    """Review on the top-ranked feature, which has an accepted, validated label."""
    from tui.screens.review import ReviewScreen

    await home(pilot)
    pilot.app.action_open("review")
    await until(pilot, lambda: isinstance(pilot.app.screen, ReviewScreen) and pilot.app.screen.shown is not None)
    await pilot.press("g")  # Review opens on the first feature without a label; the top one has one
    await until(pilot, lambda: pilot.app.screen.shown is not None and pilot.app.screen.index == 0)
    await still(pilot)


async def validation(pilot: Pilot) -> None:
    from tui.screens.validation import ValidationScreen

    await home(pilot)
    pilot.app.action_open("validation")
    await until(pilot, lambda: isinstance(pilot.app.screen, ValidationScreen))
    await still(pilot)


async def qc(pilot: Pilot) -> None:
    await home(pilot)
    pilot.app.action_open("qc")
    await still(pilot)


async def train(pilot: Pilot) -> None:
    await home(pilot)
    pilot.app.action_open("train")
    await still(pilot)


async def sql(pilot: Pilot) -> None:
    from tui.screens.sql import SQLScreen
    from tui.widgets.query_box import QueryBox

    await home(pilot)
    pilot.app.action_open("sql")
    await until(pilot, lambda: isinstance(pilot.app.screen, SQLScreen) and pilot.app.screen.query(QueryBox))
    pilot.app.screen.query_one(QueryBox).load_text(WIDE_QUERY)
    await pilot.press("f5")
    await until(pilot, lambda: "30 rows" in screen_text(pilot.app))
    await still(pilot)


def keys_over(opener: Opener, *keys: str) -> Opener:
    """An opener for the dialog that `keys` open over `opener`'s screen."""
    async def open_dialog(pilot: Pilot) -> None:
        await opener(pilot)
        await pilot.press(*keys)
        await still(pilot)

    return open_dialog


help_keys = keys_over(review, "f1")
"""f1 over Review: the key map opened on Review's keys."""
rank_dialog = keys_over(features, "R")
label_dialog = keys_over(review, "l")
confirm_delete = keys_over(home, "tab", "d")


async def save_as(pilot: Pilot) -> None:
    await sql(pilot)
    await pilot.press("ctrl+s")
    await still(pilot)
    # The suggested file lies in the test's own temporary folder, whose name changes from run to run.
    pilot.app.screen.query_one(Input).value = "results.csv"
    await pilot.pause()


SCREENS: dict[str, Opener] = {
    "home": home, "features": features, "review": review, "validation": validation, "qc": qc, "train": train,
    "sql": sql, "help": help_keys, "rank_dialog": rank_dialog, "label_dialog": label_dialog,
    "confirm_delete": confirm_delete, "save_as": save_as,
}
"""Every screen (tui/screens) and dialog, by name."""
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
