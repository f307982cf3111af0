"""The Features screen, driven by its keys through Textual's Pilot on the real app database (tests/app_data.py):
run 1 with two SAEs of 64 features, SAE 1's top six auto-accepted and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static

from store import Store
from tests.app_data import split_verdicts
from tests.pilot import Script, run_app, until
from tui.app import MiniApp
from tui.feature_filter import FilterError, parse_filter
from tui.screens.features import FeaturesScreen
from tui.screens.review import ReviewScreen
from tui.widgets.arrow_table import ArrowTable

SIZE = (80, 24)


def ranking(path: Path, sae_id: int = 1) -> pl.DataFrame:
    with Store.open(path, read_only=True) as db:
        return db.frame("SELECT r.feature_id, r.rank, r.score, r.mis, f.density, r.suggestion FROM rankings r"
                        " JOIN features f USING (sae_id, feature_id) WHERE sae_id = ? ORDER BY rank", [sae_id])


async def open_features(pilot: Pilot, **kwargs: Any) -> FeaturesScreen:
    pilot.app.action_open("features", **kwargs)
    await until(pilot, lambda: isinstance(pilot.app.screen, FeaturesScreen) and pilot.app.screen.features.height
                and pilot.app.focused is pilot.app.screen.query_one("#features"))
    await pilot.pause()
    return pilot.app.screen


def drive(path: Path, script: Script, size=SIZE) -> MiniApp:
    async def before(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()

    return run_app(MiniApp(Store.open(path), run_id=1), script, size=size, before=before)


def shown_column(screen: FeaturesScreen, header: str) -> list:
    """A column as the table holds it (what is on screen, in order)."""
    table = screen.query_one(ArrowTable)
    index = [str(c.label) for c in table.ordered_columns].index(header)
    return [table.get_row_at(i)[index] for i in range(table.row_count)]


def cursor_feature(screen: FeaturesScreen) -> int:
    table = screen.query_one(ArrowTable)
    return shown_column(screen, "feature")[table.cursor_row]


async def prompt(pilot: Pilot, key: str, text: str) -> None:
    await pilot.press(key)
    await until(pilot, lambda: pilot.app.focused is pilot.app.screen.query_one("#prompt", Input))
    await pilot.press(*text, "enter")
    await pilot.pause()


def test_lists_every_ranked_feature_with_label_and_validation(app_db: Path) -> None:
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        table = screen.query_one(ArrowTable)
        seen["headers"] = [str(c.label) for c in table.ordered_columns]
        seen["features"] = shown_column(screen, "feature")
        seen["labels"] = shown_column(screen, "label")
        seen["valid"] = shown_column(screen, "valid")
        seen["summary"] = str(screen.query_one("#summary", Static).render())

    drive(app_db, script)
    assert seen["headers"] == ["rank", "feature", "score", "first suggestion", "label", "valid", "assoc", "MIS",
                               "stab", "density %"]
    assert seen["features"] == expected["feature_id"].to_list()
    first = expected["suggestion"][0]
    assert seen["labels"][0] == f"✓ (auto) {first}"  # automatic labels are marked as not a person's
    assert seen["labels"][6:] == [""] * 58
    with Store.open(app_db, read_only=True) as db:
        held = {f: (g, s) for f, g, s in db.con.execute(
            "SELECT feature_id, generalises, signature_specific FROM current_validations").fetchall()}
    words = {(True, True): "yes", (True, False): "gen", (False, True): "spec"}
    assert seen["valid"][:6] == [words.get(held[f], "no") for f in seen["features"][:6]]
    assert set(seen["valid"][6:]) == {"–"}
    assert "64 of 64 features" in seen["summary"] and "SAE 1 (1 of 2)" in seen["summary"]


def test_valid_shows_both_verdicts_and_each_has_a_filter_word(app_db: Path) -> None:
    split = split_verdicts(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        seen["valid"] = dict(zip(shown_column(screen, "feature"), shown_column(screen, "valid"), strict=True))
        for word in ("yes", "gen", "spec", "no", "none"):
            await prompt(pilot, "slash", f"valid:{word}")
            seen[word] = set(shown_column(screen, "feature"))

    drive(app_db, script)
    labelled = {split.general, split.both, split.duplicate}
    assert [seen["valid"][f] for f in split] == ["gen", "yes", "no"]
    assert seen["yes"] == {split.both} and seen["gen"] == {split.general, split.both} and seen["spec"] == {split.both}
    assert seen["no"] >= {split.general, split.duplicate} and split.both not in seen["no"]
    assert len(seen["no"]) == 5 and not labelled & seen["none"] and len(seen["none"]) == 58


def test_s_cycles_the_sort_column_and_S_reverses_it(app_db: Path) -> None:
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await pilot.press("s")  # score, highest first
        seen["score"] = shown_column(screen, "feature")
        seen["summary"] = str(screen.query_one("#summary", Static).render())
        await pilot.press("s", "s")  # association, then MIS
        seen["mis"] = shown_column(screen, "feature")
        await pilot.press("S")
        seen["mis_up"] = shown_column(screen, "feature")
        await pilot.press("s", "s")  # stability, density
        seen["density"] = shown_column(screen, "feature")

    drive(app_db, script)
    assert seen["score"] == expected.sort("score", descending=True, maintain_order=True)["feature_id"].to_list()
    assert "sort score ↓" in seen["summary"]
    assert seen["mis"] == expected.sort("mis", descending=True, nulls_last=True, maintain_order=True)[
        "feature_id"].to_list()
    assert seen["mis_up"] == expected.sort("mis", nulls_last=True, maintain_order=True)["feature_id"].to_list()
    assert seen["density"] == expected.sort("density", descending=True, maintain_order=True)["feature_id"].to_list()


def test_filter_with_slash_narrows_and_an_empty_filter_shows_all(app_db: Path) -> None:
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await prompt(pilot, "slash", "score>0.4 label:none")
        seen["numeric"] = shown_column(screen, "feature")
        seen["summary"] = str(screen.query_one("#summary", Static).render())
        await pilot.press("slash")
        await until(pilot, lambda: app.focused is screen.query_one("#prompt", Input))
        screen.query_one("#prompt", Input).value = ""
        await pilot.press(*'"condition = 3"', "enter")
        await pilot.pause()
        seen["text"] = shown_column(screen, "feature")
        await pilot.press("slash")  # the box opens with the filter: ctrl+u clears it, enter shows all
        await until(pilot, lambda: app.focused is screen.query_one("#prompt", Input))
        await pilot.press("ctrl+u", "enter")
        await pilot.pause()
        seen["cleared"] = shown_column(screen, "feature")

    drive(app_db, script)
    want = expected.with_row_index().filter((pl.col("score") > 0.4) & (pl.col("index") >= 6))["feature_id"].to_list()
    assert seen["numeric"] == want and len(want) > 0
    assert f"{len(want)} of 64 features" in seen["summary"] and "filter: score>0.4 label:none" in seen["summary"]
    assert seen["text"] == expected.filter(pl.col("suggestion") == "condition = 3")["feature_id"].to_list()
    assert seen["cleared"] == expected["feature_id"].to_list()


def test_a_bad_filter_is_explained_inline_and_changes_nothing(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await prompt(pilot, "slash", "score>high")
        seen["error"] = str(screen.query_one("#prompt-error", Static).render())
        seen["open"] = screen.query_one("#prompt-bar").has_class("-open")
        seen["rows"] = screen.view.height
        await pilot.press("escape")  # closes the prompt, stays on Features
        await pilot.pause()
        seen["closed"] = not screen.query_one("#prompt-bar").has_class("-open")
        seen["screen"] = app.screen

    drive(app_db, script)
    assert seen["error"] == "filter: 'score>high': 'high' is not a number"
    assert seen["open"] and seen["rows"] == 64 and seen["closed"] and isinstance(seen["screen"], FeaturesScreen)


def test_colon_and_hash_jump_to_a_rank_or_a_feature(app_db: Path) -> None:
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await prompt(pilot, "colon", "40")
        seen["rank"] = cursor_feature(screen)
        target = int(expected["feature_id"][20])
        await prompt(pilot, "number_sign", str(target))
        seen["feature"] = (cursor_feature(screen), target)
        await prompt(pilot, "number_sign", "999")
        seen["missing"] = str(screen.query_one("#prompt-error", Static).render())
        await pilot.press("escape")
        await prompt(pilot, "slash", "label:any")
        await prompt(pilot, "colon", "30")
        seen["hidden"] = str(screen.query_one("#prompt-error", Static).render())

    drive(app_db, script)
    assert seen["rank"] == expected["feature_id"][39]
    assert seen["feature"][0] == seen["feature"][1]
    assert "no feature 999 in SAE 1" in seen["missing"]
    assert "rank 30 is hidden by the filter 'label:any'" in seen["hidden"]


def test_f_finds_text_and_n_N_go_to_the_next_and_previous_match(app_db: Path) -> None:
    expected = ranking(app_db)
    matches = expected.with_row_index().filter(pl.col("suggestion").str.contains("reward"))["index"].to_list()
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        table = screen.query_one(ArrowTable)
        await prompt(pilot, "f", "reward")
        seen["first"] = table.cursor_row
        await pilot.press("n")
        seen["second"] = table.cursor_row
        await pilot.press("N")
        seen["back"] = table.cursor_row
        await pilot.press("N")  # before the first match: wraps to the last
        seen["wrapped"] = table.cursor_row
        seen["rows"] = screen.view.height  # find does not hide anything

    drive(app_db, script)
    assert len(matches) >= 2
    assert (seen["first"], seen["second"], seen["back"], seen["wrapped"]) == (matches[0], matches[1], matches[0],
                                                                             matches[-1])
    assert seen["rows"] == 64


def test_brackets_switch_between_the_runs_saes(app_db: Path) -> None:
    second = ranking(app_db, 2)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: screen.sae_id == 2)
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["features"] = shown_column(screen, "feature")
        seen["summary"] = str(screen.query_one("#summary", Static).render())
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.sae_id == 1)
        seen["back"] = screen.sae_id

    drive(app_db, script)
    assert seen["features"] == second["feature_id"].to_list()
    assert "SAE 2 (2 of 2)" in seen["summary"] and seen["back"] == 1


def test_enter_reviews_the_feature_and_coming_back_shows_the_new_label(app_db: Path) -> None:
    expected = ranking(app_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await open_features(pilot)
        await prompt(pilot, "colon", "10")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.shown is not None)
        seen["reviewing"] = app.screen.shown.feature_id
        await pilot.press("x")
        await until(pilot, lambda: app.screen.shown is not None and app.screen.shown.rank == 11)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["label"] = shown_column(screen, "label")[9]
        seen["cursor"] = cursor_feature(screen)

    drive(app_db, script)
    assert seen["reviewing"] == expected["feature_id"][9]
    assert seen["label"] == "✗ rejected" and seen["cursor"] == expected["feature_id"][9]


def test_escape_goes_back_and_the_activations_are_ordered_for_review(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_features(pilot)
        await app.workers.wait_for_complete()
        await pilot.press("escape")
        await pilot.pause()
        seen["screen"] = type(app.screen).__name__

    drive(app_db, script)
    assert seen["screen"] == "HomeScreen"
    with Store.open(app_db, read_only=True) as db:
        copied = db.scalar("SELECT count(*) FROM activations_by_feature WHERE sae_id = 1")
        original = db.scalar("SELECT count(*) FROM activations WHERE sae_id = 1")
    assert copied == original > 0


def test_no_ranking_says_how_to_make_one(app_db: Path) -> None:
    with Store.open(app_db) as db:
        db.con.execute("DELETE FROM rankings")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.action_open("features")
        await until(pilot, lambda: isinstance(app.screen, FeaturesScreen) and app.screen.sae_id is not None)
        await pilot.pause()
        seen["text"] = str(app.screen.query_one("#empty", Static).render())

    drive(app_db, script)
    assert "no ranking yet" in seen["text"] and "mini rank --run 1" in seen["text"]


@pytest.mark.parametrize(("text", "error"), [
    ("score>abc", "'abc' is not a number"),
    ("condition=2", "no column 'condition'"),
    ("label:maybe", "label: takes one of"),
    ("valid:maybe", "valid: takes one of yes, gen, spec, no, none, untestable"),
    ("score >0.5", "without spaces"),
    ('"open', "close the quote"),
])
def test_filter_errors_name_the_term_and_the_problem(text: str, error: str) -> None:
    with pytest.raises(FilterError, match=error):
        parse_filter(text)


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.


def test_f1_opens_on_this_screens_keys_with_meanings_wrapped_beside_them(app_db: Path) -> None:
    from tui.screens.help import HelpScreen

    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await open_features(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen))
        seen["title"] = app.screen.query_one("#help").border_title
        seen["lines"] = str(app.screen.query_one("#key-map", Static).render()).splitlines()

    drive(app_db, script)
    lines = seen["lines"]
    assert seen["title"] == "mini keys: Features"
    assert lines[0] == "Features: this screen" and lines[1].lstrip().startswith("up, down")
    assert "Everywhere" in lines and lines.index("Everywhere") > lines.index("Features: this screen")
    assert max(len(line) for line in lines) <= 72
    # A meaning that wraps goes on beside its key, not under it: continuation lines start in the second column.
    wrapped = [line for line in lines[1:] if line.startswith(" " * 18)]
    assert wrapped and all(line[18] != " " for line in wrapped)
