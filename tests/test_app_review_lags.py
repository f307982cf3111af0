"""Review of an SAE trained with --history: the Units panel names each lag's share of the feature's encoder norm
(oldest lag first, against 1/L) and each lag's top input unit, as encoder_lags stores them; a plain SAE shows no
such line."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot

from sample_data import SampleConfig
from store import Store
from tests.conftest import cli_ranked_database
from tests.pilot import run_app, until
from tui.app import MiniApp
from tui.screens.review import ReviewScreen
from tui.widgets.text_panel import TextPanel

HISTORY = 4


@pytest.fixture(scope="module")
def history_db(tmp_path_factory) -> Path:
    """A small recording trained with --history 4 through the CLI and ranked (run 1)."""
    return cli_ranked_database(tmp_path_factory.mktemp("review_lags"), SampleConfig(n_bins=3000, n_units=24),
                               "--epochs", "2", "--d-sae", "32", "--k", "3", "--history", str(HISTORY))


def expected_words(path: Path, sae_id: int, feature_id: int) -> list[str]:
    """The panel's words for the feature, from the database: shares oldest first, 1/L, top unit names."""
    with Store.open(path, read_only=True) as db:
        lags = db.con.execute(
            "SELECT e.lag, e.norm, u.name FROM encoder_lags e JOIN units u ON u.unit_id = e.top_unit_id "
            "WHERE e.sae_id = ? AND e.feature_id = ? ORDER BY e.lag DESC", [sae_id, feature_id]).fetchall()
    assert [lag for lag, _, _ in lags] == list(range(HISTORY - 1, -1, -1))
    total = sum(norm for _, norm, _ in lags)
    return ["lags", "(oldest→current):", *(f"{100 * norm / total:.0f}%" for _, norm, _ in lags), "vs", "1/L",
            f"{100 / HISTORY:.0f}%", "·", "top", "unit", "per", "lag:", *(name for _, _, name in lags)]


def review_units(path: Path, steps: int, size: tuple[int, int]) -> list[tuple[int, int, str, int]]:
    """(sae, feature, Units panel text, the width it was laid out for) of the first feature Review shows and of
    each of `steps` presses of j."""
    seen: list[tuple[int, int, str, int]] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        app.action_open("review")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ReviewScreen)
        for step in range(steps + 1):
            if step:
                before = screen.shown.feature_id
                await pilot.press("j")
                await until(pilot, lambda before=before: screen.shown is not None
                            and screen.shown.feature_id != before)
            else:
                await until(pilot, lambda: screen.shown is not None)
            await pilot.pause()
            panel = screen.query_one("#units", TextPanel)
            seen.append((screen.shown.sae_id, screen.shown.feature_id, panel.plain, panel._built_width))

    run_app(MiniApp(Store.open(path), run_id=1), script, size=size)
    return seen


@pytest.mark.parametrize("size", [(80, 24), (160, 40)])
def test_review_shows_each_lags_share_and_top_unit_of_the_feature(history_db, size):
    seen = review_units(history_db, 2, size)
    assert len({feature for _, feature, _, _ in seen}) == 3
    for sae_id, feature_id, units, width in seen:
        lines = units.splitlines()
        lag_lines = lines[:next(i for i, line in enumerate(lines) if line.split()[:1] == ["unit"])]
        assert lag_lines and all(len(line) <= max(width, 8) for line in lag_lines)  # wrapped to the panel, never cut
        assert " ".join(lag_lines).split() == expected_words(history_db, sae_id, feature_id), units
    # The features differ in how they weigh the lags: the line follows the feature shown.
    assert len({" ".join(units.splitlines()[:2]) for _, _, units, _ in seen}) > 1


def test_a_plain_sae_shows_no_lag_line(app_db):
    (_, _, units, _), = review_units(app_db, 0, (120, 30))
    assert "lags" not in units and "oldest" not in units and units.splitlines()[0].split()[0] == "unit"
