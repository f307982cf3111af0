"""The Sweep screen on a real sweep (a small sample, grid d_sae=16,32 k=2, 2 seeds, 2 epochs), driven through
Textual's Pilot: its trials and Pareto front, a sweep resumed by the real CLI in another process showing up
live (the app ingests the folder), and promoting a trial to a run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from engine.sweep.folder import SweepFolder, now, write_json
from engine.sweep.plan import SweepConfig
from engine.sweep.run_sweep import ingest, start_sweep
from engine.sweep.summary import pareto_front
from sample_data import SampleConfig, generate
from store.db import Store
from tests.conftest import ROOT, run_cli
from tests.pilot import notifications, plain, run_app, until
from tui.app import MiniApp
from tui.screens.sweep import NO_SWEEPS_TEXT, ParetoPlot, SweepScreen


@pytest.fixture(scope="module")
def sweep_template(tmp_path_factory) -> Path:
    """A database with dataset 'small' and sweep 1 finished (4 trials in 2 packs), its folder beside it."""
    folder = tmp_path_factory.mktemp("sweep_db")
    generate(SampleConfig(n_bins=3000, n_units=20, n_conditions=4, seed=1)).write(folder / "data")
    result = run_cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "small",
                     "--db", "s.duckdb", cwd=folder)
    assert result.returncode == 0, result.stderr
    outcome = start_sweep(folder / "s.duckdb", SweepConfig(dataset="small", grid="d_sae=16,32 k=2", seeds=2,
                                                            epochs=2, max_parallel=1))
    assert outcome.finished == 4
    return folder


@pytest.fixture
def sweep_db(sweep_template: Path, tmp_path: Path) -> Path:
    """A copy of the database and its sweep folder, the sweep's row naming the copied folder."""
    shutil.copy(sweep_template / "s.duckdb", tmp_path / "s.duckdb")
    shutil.copytree(sweep_template / "s.sweeps", tmp_path / "s.sweeps")
    with Store.open(tmp_path / "s.duckdb") as db:
        db.con.execute("UPDATE sweeps SET folder = ?", [str(tmp_path / "s.sweeps" / "sweep-1")])
    return tmp_path / "s.duckdb"


def stored_trials(db_path: Path) -> pl.DataFrame:
    with Store.open(db_path, read_only=True) as db:
        return db.frame("SELECT * FROM sweep_trials WHERE sweep_id = 1 ORDER BY trial_id")


def untrain_pack(db_path: Path, failed: bool = False) -> list[int]:
    """Take the result of the pack holding trial 1 away (and with `failed`, leave a failed try in its place),
    and ingest that; returns the pack's trial ids."""
    with Store.open(db_path) as db:
        folder = SweepFolder(db.scalar("SELECT folder FROM sweeps WHERE sweep_id = 1"))
        pack = next(p for p in folder.plan()["packs"] if any(t["trial_id"] == 1 for t in p["trials"]))
        shutil.rmtree(folder.pack(pack["pack_id"]))
        if failed:
            attempt = folder.new_attempt(pack["pack_id"])
            write_json(attempt / "started.json", {"host": "node7", "job_id": "42_0", "device": "cpu",
                                                  "started_at": now()})
            write_json(attempt / "failed.json", {"error": "CUDA out of memory (a test's)", "ended_at": now()})
        ingest(db, 1)
    return [t["trial_id"] for t in pack["trials"]]


def table_rows(app: MiniApp) -> dict[int, list[str]]:
    table = app.screen.query_one("#trials", DataTable)
    return {int(key.value): [plain(cell).strip() for cell in table.get_row(key)] for key in table.rows}


async def open_sweeps(app: MiniApp, pilot: Pilot) -> None:
    await app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.press("s")  # from Home
    await until(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.trials is not None)
    await pilot.pause()


def drive(db_path: Path, script, size: tuple[int, int] = (120, 40)) -> MiniApp:
    return run_app(MiniApp(Store.open(db_path)), script, size=size, before=open_sweeps)


def test_every_trial_with_its_front_and_the_finished_points_in_the_pareto_view(sweep_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["rows"] = table_rows(app)
        seen["drawn"] = dict(app.screen.query_one(ParetoPlot).drawn)
        seen["progress"] = plain(app.screen.query_one("#progress", Static).content)
        await pilot.press("tab", "down")  # the trials, second row
        await pilot.pause()
        seen["detail"] = plain(app.screen.query_one("#detail", Static).content)
        seen["selected"] = app.screen.query_one(ParetoPlot).drawn["selected"]

    drive(sweep_db, script)
    trials = stored_trials(sweep_db)
    front = pareto_front(trials["val_l0"].to_list(), trials["val_fvu"].to_list())
    assert sorted(seen["rows"]) == trials["trial_id"].to_list()
    for row, on_front in zip(trials.iter_rows(named=True), front, strict=True):
        cells = seen["rows"][row["trial_id"]]
        assert (cells[1] == "★") == on_front, (row["trial_id"], cells)
        assert cells[7] == "finished" and float(cells[8]) == round(row["val_fvu"], 4)
    points = {(r["val_l0"], r["val_fvu"]) for r in trials.iter_rows(named=True)}
    assert set(seen["drawn"]["front"]) | set(seen["drawn"]["trials"]) == points
    assert set(seen["drawn"]["front"]) == {p for p, f in zip(trials.select("val_l0", "val_fvu").rows(), front,
                                                                strict=True) if f}
    assert "sweep 1 · 4 trials: 0 pending · 0 running · 4 finished · 0 failed · 0 lost" in seen["progress"]
    second = trials.row(1, named=True)
    assert seen["selected"] == [(second["val_l0"], second["val_fvu"])]
    assert f"trial {second['trial_id']}" in seen["detail"] and f"stability {second['stability']:.3f}" in seen["detail"]


def test_a_sweep_resumed_by_the_cli_shows_up_live_and_the_app_ingests_it(sweep_db: Path) -> None:
    pack_trials = untrain_pack(sweep_db)
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        rows = table_rows(app)
        seen["before"] = {t: rows[t][7] for t in pack_trials}
        # The app holds the database: the CLI trains from the folder beside it and leaves the ingesting to us.
        process = subprocess.Popen([sys.executable, "-m", "tui.cli", "sweep", "--resume", "1", "--db", str(sweep_db)],
                                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            await until(pilot, lambda: all(table_rows(app)[t][7] == "finished" for t in pack_trials), timeout=90)
        finally:
            seen["cli"] = process.communicate(timeout=60)[0]
        seen["progress"] = plain(app.screen.query_one("#progress", Static).content)

    drive(sweep_db, script)
    assert seen["before"] == {t: "pending" for t in pack_trials}
    assert "held by another process" in seen["cli"], seen["cli"]
    assert "4 finished" in seen["progress"]
    trials = stored_trials(sweep_db)
    assert trials["status"].to_list() == ["finished"] * 4
    assert trials.filter(pl.col("trial_id").is_in(pack_trials))["val_fvu"].is_not_null().all()


def test_p_promotes_a_finished_trial_and_refuses_a_failed_one_writing_nothing(sweep_db: Path) -> None:
    failed = untrain_pack(sweep_db, failed=True)
    before = stored_trials(sweep_db)
    finished = before.filter(pl.col("status") == "finished")["trial_id"].to_list()
    seen: dict[str, Any] = {}

    async def select(app: MiniApp, pilot: Pilot, trial_id: int) -> None:
        table = app.screen.query_one("#trials", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index(str(trial_id)))
        await pilot.pause()

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await select(app, pilot, failed[0])
        seen["failed_detail"] = plain(app.screen.query_one("#detail", Static).content)
        await pilot.press("p")
        await until(pilot, lambda: len(notifications(app)) >= 1)
        await app.workers.wait_for_complete()
        seen["refused"] = notifications(app)[-1]
        await select(app, pilot, finished[0])
        await pilot.press("p")
        await until(pilot, lambda: len(notifications(app)) >= 2 and table_rows(app)[finished[0]][-1] != "—")
        seen["promoted"] = notifications(app)[-1]
        seen["run_cell"] = table_rows(app)[finished[0]][-1]
        await pilot.press("enter")  # opens the run's Features
        await until(pilot, lambda: type(app.screen).__name__ == "FeaturesScreen")
        seen["open_run"] = app.run_id

    with Store.open(sweep_db, read_only=True) as db:
        runs_before = db.scalar("SELECT count(*) FROM runs")
    drive(sweep_db, script)
    assert f"trial {failed[0]} is failed; only a finished trial can be promoted" in seen["refused"]
    assert "error: CUDA out of memory (a test's)" in seen["failed_detail"] and "job 42_0" in seen["failed_detail"]
    after = stored_trials(sweep_db)
    with Store.open(sweep_db, read_only=True) as db:
        runs = db.frame("SELECT run_id, status, config FROM runs ORDER BY run_id")
    assert runs.height == runs_before + 1
    run_id = runs["run_id"][-1]
    assert seen["promoted"].startswith(f"sweep 1 trial {finished[0]}: promoted to run {run_id}")
    assert seen["run_cell"] == str(run_id) and seen["open_run"] == run_id
    promoted = after.filter(pl.col("run_id") == run_id)["trial_id"].to_list()
    assert finished[0] in promoted and not set(promoted) & set(failed)
    # Nothing else changed: the failed trials' rows are as they were.
    assert after.filter(pl.col("trial_id").is_in(failed)).drop("run_id").equals(
        before.filter(pl.col("trial_id").is_in(failed)).drop("run_id"))
    assert after.filter(pl.col("trial_id").is_in(failed))["run_id"].is_null().all()


def test_no_sweeps_says_how_to_start_one(tmp_path: Path) -> None:
    generate(SampleConfig(n_bins=500, n_units=5, n_conditions=2, seed=2)).write(tmp_path / "data")
    result = run_cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "tiny",
                     "--db", "e.duckdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    seen: dict[str, str] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("s")
        await until(pilot, lambda: isinstance(app.screen, SweepScreen)
                    and app.screen.query_one("#empty", Static).content == NO_SWEEPS_TEXT)
        seen["text"] = plain(app.screen.query_one("#empty", Static).content)

    run_app(MiniApp(Store.open(tmp_path / "e.duckdb")), script)
    assert "mini sweep --dataset NAME --grid" in seen["text"]
