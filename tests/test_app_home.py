"""The app shell and the Home screen, driven through Textual's Pilot on real DuckDB files."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.command import CommandPalette
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from store.datasets import NewDataset, add_dataset
from store.db import Store
from tests.app_data import split_verdicts
from tests.pilot import palette_search, plain, run_app, screen_after, settle
from tui.app import MiniApp
from tui.screens.help import HelpScreen
from tui.screens.home import EMPTY_TEXT, HomeScreen

SIZE = (80, 24)


def make_dataset(
    name: str, *, n_units: int, examples_per_trial: int, kind: str = "spike_counts"
) -> NewDataset:
    """A tiny dataset: three trials (one per split), a categorical and a continuous variable."""
    splits = ["train", "val", "test"]
    n_examples = 3 * examples_per_trial
    example_ids = list(range(n_examples))
    trial_of = [i // examples_per_trial for i in example_ids]
    units = pl.DataFrame(
        {
            "unit_id": list(range(n_units)),
            "name": [f"u{i}" for i in range(n_units)],
            "mean_count": [1.0] * n_units,
            "firing_rate_hz": [50.0] * n_units,
        }
    )
    trials = pl.DataFrame(
        {
            "trial_id": [0, 1, 2],
            "label": ["t0", "t1", "t2"],
            "split": splits,
            "first_example": [0, examples_per_trial, 2 * examples_per_trial],
            "n_examples": [examples_per_trial] * 3,
        }
    )
    examples = pl.DataFrame(
        {
            "example_id": example_ids,
            "trial_id": trial_of,
            "time_s": [i * 0.02 for i in example_ids],
            "split": [splits[t] for t in trial_of],
        }
    )
    counts = pl.DataFrame(
        {
            "example_id": example_ids,
            "unit_id": [i % n_units for i in example_ids],
            "value": [1.0] * n_examples,
        },
        schema={"example_id": pl.Int32, "unit_id": pl.Int32, "value": pl.Float32},
    )
    variables = pl.DataFrame(
        {
            "variable": ["condition", "speed"],
            "kind": ["categorical", "continuous"],
            "period": [None, None],
            "n_levels": [2, None],
            "n_missing": [0, 0],
            "source": ["inferred", "inferred"],
        },
        schema_overrides={"period": pl.Float64, "n_levels": pl.Int32},
    )
    values = pl.concat(
        [
            pl.DataFrame(
                {
                    "example_id": example_ids,
                    "variable": ["condition"] * n_examples,
                    "value": [None] * n_examples,
                    "category": ["left" if t % 2 else "right" for t in trial_of],
                },
                schema_overrides={"value": pl.Float64},
            ),
            pl.DataFrame(
                {
                    "example_id": example_ids,
                    "variable": ["speed"] * n_examples,
                    "value": [float(i) for i in example_ids],
                    "category": [None] * n_examples,
                },
                schema_overrides={"category": pl.String},
            ),
        ]
    )
    return NewDataset(
        name=name,
        source=f"/data/{name}.npy",
        kind=kind,
        bin_size_s=0.02,
        trial_source="column:trial",
        split_seed=0,
        options={},
        units=units,
        trials=trials,
        examples=examples,
        counts=counts,
        variables=variables,
        values=values,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database with two datasets: 'reach' (4 units, 3×2 examples) and 'maze' (6 units, 3×4 examples)."""
    path = tmp_path / "t.duckdb"
    with Store.open(path) as db:
        add_dataset(db, make_dataset("reach", n_units=4, examples_per_trial=2))
        add_dataset(db, make_dataset("maze", n_units=6, examples_per_trial=4, kind="activations"))
    return path


@pytest.fixture
def empty_db_path(tmp_path: Path) -> Path:
    path = tmp_path / "empty.duckdb"
    Store.open(path).close()
    return path


def drive(db: Store, script: Callable[[MiniApp, Pilot], Coroutine[Any, Any, None]]) -> MiniApp:
    """Run the real app at 80×24 with `script` at the controls; returns the app once it has shut down."""
    return run_app(MiniApp(db), script, size=SIZE, before=settle)


def table_rows(app: MiniApp) -> list[list[str]]:
    table = app.screen.query_one("#datasets", DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


HEADER = ["name", "kind", "examples", "units", "trials", "train", "val", "test", "variables"]


def test_home_lists_both_datasets_with_their_numbers(db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        table = app.screen.query_one("#datasets", DataTable)
        seen["screen"] = app.screen
        seen["headers"] = [str(column.label) for column in table.ordered_columns]
        seen["rows"] = table_rows(app)
        seen["table_visible"] = table.display
        seen["empty_visible"] = app.screen.query_one("#empty", Static).display
        seen["title"] = (app.title, app.sub_title)

    drive(Store.open(db_path), script)
    assert isinstance(seen["screen"], HomeScreen)
    assert seen["headers"] == HEADER
    assert seen["rows"] == [
        ["reach", "spike_counts", "6", "4", "3", "2", "2", "2", "condition, speed"],
        ["maze", "activations", "12", "6", "3", "4", "4", "4", "condition, speed"],
    ]
    assert seen["table_visible"] and not seen["empty_visible"]
    assert seen["title"] == ("mini", str(db_path))


def test_enter_shows_details_of_the_selected_dataset(db_path: Path) -> None:
    seen: dict[str, str] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        details = app.screen.query_one("#details", Static)
        seen["hidden_before"] = str(not details.display)
        await pilot.press("down", "enter")
        await pilot.pause()
        seen["shown_after"] = str(details.display)
        seen["text"] = str(details.render())

    drive(Store.open(db_path), script)
    assert seen["hidden_before"] == "True" and seen["shown_after"] == "True"
    assert "maze" in seen["text"] and "/data/maze.npy" in seen["text"]
    assert "20 ms" in seen["text"]
    assert "condition:categorical, speed:continuous" in seen["text"]


def test_empty_database_shows_how_to_get_data(empty_db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        empty = app.screen.query_one("#empty", Static)
        seen["text"] = str(empty.render())
        seen["empty_visible"] = empty.display
        seen["table_visible"] = app.screen.query_one("#datasets", DataTable).display

    drive(Store.open(empty_db_path), script)
    assert seen["text"] == EMPTY_TEXT
    assert "mini demo" in seen["text"]
    assert seen["empty_visible"] and not seen["table_visible"]


def test_f1_opens_help_and_escape_closes_it(db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["open"] = await screen_after(pilot, "f1")
        seen["key_map"] = str(app.screen.query_one("#key-map", Static).render())
        seen["after_escape"] = await screen_after(pilot, "escape")
        await screen_after(pilot, "f1")
        seen["after_second_f1"] = await screen_after(pilot, "f1")

    drive(Store.open(db_path), script)
    assert isinstance(seen["open"], HelpScreen)
    for key in ("f1", "ctrl+p", "q, ctrl+q", "enter", "r "):
        assert key in seen["key_map"]
    assert isinstance(seen["after_escape"], HomeScreen)
    assert isinstance(seen["after_second_f1"], HomeScreen)


def test_r_refreshes_after_a_dataset_is_added_behind_the_apps_back(db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["before"] = [row[0] for row in table_rows(app)]
        writer = app.db.for_thread()
        add_dataset(writer, make_dataset("odour", n_units=3, examples_per_trial=5))
        writer.close()
        await pilot.pause()
        seen["not_yet"] = [row[0] for row in table_rows(app)]
        await pilot.press("r")
        await settle(app, pilot)
        seen["after"] = table_rows(app)

    drive(Store.open(db_path), script)
    assert seen["before"] == seen["not_yet"] == ["reach", "maze"]
    assert [row[0] for row in seen["after"]] == ["reach", "maze", "odour"]
    assert seen["after"][2][2:8] == ["15", "3", "3", "5", "5", "5"]


def test_command_palette_opens_with_ctrl_p_and_lists_our_commands(db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["screen"] = palette = await screen_after(pilot, "ctrl+p")
        # The palette gathers commands in the background; wait until ours are listed.
        for _ in range(50):
            prompts = [str(option.prompt) for option in palette.query_one("CommandList").options]
            if any("Help" in prompt for prompt in prompts):
                break
            await pilot.pause(0.05)
        seen["prompts"] = prompts
        seen["after"] = await screen_after(pilot, "escape")

    drive(Store.open(db_path), script)
    assert isinstance(seen["screen"], CommandPalette)
    titles = {prompt.splitlines()[0] for prompt in seen["prompts"]}
    assert {"Home", "Help", "Quit", "Refresh datasets"} <= titles
    # Textual's own Quit is hidden so there is one, not two.
    assert sum(prompt.splitlines()[0] == "Quit" for prompt in seen["prompts"]) == 1
    assert isinstance(seen["after"], HomeScreen)


def test_palette_help_command_opens_help(db_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await palette_search(pilot, "help", "Help")
        await pilot.press("enter")
        for _ in range(20):
            await pilot.pause(0.05)
            if isinstance(app.screen, HelpScreen):
                break
        seen["screen"] = app.screen

    drive(Store.open(db_path), script)
    assert isinstance(seen["screen"], HelpScreen)


def test_q_quits_and_closes_the_store(db_path: Path) -> None:
    db = Store.open(db_path)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await pilot.press("q")
        await pilot.pause()
        seen["exiting"] = app._exit

    app = drive(db, script)
    assert seen["exiting"] is True
    assert app.return_code == 0
    with pytest.raises(Exception, match=r"(?i)closed"):
        db.con.execute("SELECT 1")
    # The file is free again: another owner can open it.
    Store.open(db_path).close()


def test_closing_interrupts_a_query_still_running_in_a_worker_thread(empty_db_path: Path) -> None:
    """A slow read must not keep the store open (DuckDB refuses to close a busy connection)."""
    import threading

    db = Store.open(empty_db_path)
    app = MiniApp(db)
    started, outcome = threading.Event(), {}

    def slow_read() -> None:
        try:
            with app.stores.cursor() as thread_db:
                started.set()
                thread_db.scalar("SELECT sum(hash(range)) FROM range(20000000000)")
            outcome["finished"] = True
        except Exception as error:
            outcome["error"] = error

    thread = threading.Thread(target=slow_read)
    thread.start()
    assert started.wait(5)
    app.stores.close()
    thread.join(10)
    assert not thread.is_alive()
    assert "finished" not in outcome and "nterrupt" in str(outcome["error"])
    with pytest.raises(Exception, match=r"(?i)closed"):
        db.con.execute("SELECT 1")


# -- runs (on the complete app database: a dataset, run 1 with 2 SAEs, labels, validations) ----------


def test_runs_are_listed_with_their_labels_and_validations(app_db: Path) -> None:
    from store.summaries import run_summaries

    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        runs = app.screen.query_one("#runs", DataTable)
        seen["rows"] = [[str(c) for c in runs.get_row_at(i)] for i in range(runs.row_count)]

    split_verdicts(app_db)  # two labels generalise, one of them with a specific signature too
    with Store.open(app_db) as db:
        expected = run_summaries(db)[0]
    assert (expected["generalises"], expected["validated"]) == (2, 1)
    drive(Store.open(app_db), script)
    assert len(seen["rows"]) == 1
    row = seen["rows"][0]
    assert row[:7] == ["1", "sample", "finished", "batchtopk", "2", "64", "4"]
    assert row[-4:] == [str(expected["labelled"]), str(expected["generalises"]), str(expected["validated"]),
                        "—"]  # trained on every bin
    assert expected["labelled"] == 6


def test_enter_on_a_run_opens_its_features_and_t_opens_train(app_db: Path) -> None:
    from tui.screens.features import FeaturesScreen
    from tui.screens.train import TrainScreen

    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await pilot.press("tab", "enter")
        await settle(app, pilot)
        seen["features"] = app.screen
        seen["run_id"] = app.run_id
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("t")
        await settle(app, pilot)
        seen["train"] = app.screen

    drive(Store.open(app_db), script)
    assert isinstance(seen["features"], FeaturesScreen) and seen["run_id"] == 1
    assert isinstance(seen["train"], TrainScreen)


def test_d_deletes_a_run_only_after_yes(app_db: Path) -> None:
    from tui.screens.confirm import ConfirmScreen

    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["asked"] = await screen_after(pilot, "tab", "d")
        await pilot.press("n")
        await settle(app, pilot)
        seen["after_no"] = app.screen.query_one("#runs", DataTable).row_count
        await pilot.press("d")
        await pilot.pause()
        await pilot.press("y")
        await settle(app, pilot)
        await settle(app, pilot)
        seen["after_yes_visible"] = app.screen.query_one("#runs", DataTable).display

    drive(Store.open(app_db), script)
    assert isinstance(seen["asked"], ConfirmScreen)
    assert seen["after_no"] == 1 and seen["after_yes_visible"] is False
    with Store.open(app_db) as db:
        assert db.scalar("SELECT count(*) FROM runs") == 0
        assert db.scalar("SELECT count(*) FROM activations") == 0
        # Every table with an sae_id column is empty: nothing of the run is left behind.
        tables = db.frame("SELECT table_name FROM information_schema.columns WHERE column_name = 'sae_id'"
                          " AND table_name IN (SELECT table_name FROM information_schema.tables"
                          " WHERE table_type = 'BASE TABLE')")["table_name"].to_list()
        assert "label_undos" in tables and "labels" in tables
        for table in tables:
            assert db.scalar(f"SELECT count(*) FROM {table}") == 0, table
        assert db.scalar("SELECT count(*) FROM datasets") == 1  # the dataset stays


# -- quality flags ------------------------------------------------------------------------------------------


def stored_flags(db_path: Path, where: str) -> list[dict[str, Any]]:
    with Store.open(db_path, read_only=True) as db:
        return db.records(f"SELECT * FROM quality_flags WHERE {where} ORDER BY sae_id, flag, split")


def flags_panel(app: MiniApp) -> dict[str, Any]:
    panel = app.screen.query_one("#flags", Static)
    return {"shown": panel.display, "lines": plain(panel.content, width=1000).splitlines(),
            "height": panel.size.height}


async def flags_after(pilot: Pilot, key: str) -> dict[str, Any]:
    """The flags panel once `key` is pressed and handled."""
    await screen_after(pilot, key)
    return flags_panel(pilot.app)


def test_runs_show_how_many_flags_and_the_focused_runs_flags_below(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        runs = app.screen.query_one("#runs", DataTable)
        seen["headers"] = [str(column.label) for column in runs.ordered_columns]
        seen["row"] = [str(cell) for cell in runs.get_row_at(0)]
        seen["on_datasets"] = flags_panel(app)  # 'sample' has no flags from its import
        seen["on_runs"] = await flags_after(pilot, "tab")
        seen["back"] = await flags_after(pilot, "shift+tab")

    run = stored_flags(app_db, "run_id = 1")
    drive(Store.open(app_db), script)
    assert run and all(row["flag"] == "l0_tail" for row in run)  # k 4 and a short training: bursts get through
    assert seen["row"][seen["headers"].index("flags")] == str(len(run))
    assert not seen["on_datasets"]["shown"] and not seen["back"]["shown"]
    on_runs = seen["on_runs"]
    assert on_runs["shown"]
    assert on_runs["lines"] == [f"run 1 · {len(run)} flags",
                                *(f"⚑ SAE {row['sae_id']}: {row['message']} — try: {row['suggestion']}" for row in run)]
    # At 80 columns each flag keeps to one line (cut to the width) under its title.
    assert on_runs["height"] == 1 + len(run)


def test_a_datasets_import_flags_show_while_the_cursor_is_on_it(app_db: Path, tmp_path: Path) -> None:
    from engine.ingest.importer import ImportOptions, import_files
    from tests.app_data import write_flagged_recording

    counts, meta = write_flagged_recording(tmp_path / "loud")
    with Store.open(app_db) as db:
        import_files(db, counts, meta, ImportOptions(name="loud"))
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["loud"] = await flags_after(pilot, "down")
        seen["sample"] = await flags_after(pilot, "up")

    drive(Store.open(app_db), script)
    at_import = stored_flags(app_db, "dataset_id = 2")
    assert [row["flag"] for row in at_import] == ["unit_dominates_variance"] and at_import[0]["run_id"] is None
    assert seen["loud"]["shown"]
    assert seen["loud"]["lines"] == ["loud · 1 flag at import",
                                     f"⚑ {at_import[0]['message']} — try: {at_import[0]['suggestion']}"]
    assert not seen["sample"]["shown"]


def test_flag_lines_wrap_at_160_columns(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await pilot.press("tab")
        await pilot.pause()
        seen.update(flags_panel(app))

    run_app(MiniApp(Store.open(app_db)), script, size=(160, 48), before=settle)
    run = stored_flags(app_db, "run_id = 1")
    longest = max(len(f"⚑ SAE {row['sae_id']}: {row['message']} — try: {row['suggestion']}") for row in run)
    assert longest > 160 - 2  # too long for one line: the whole line shows, wrapped
    assert seen["shown"] and seen["height"] == 1 + 2 * len(run)
