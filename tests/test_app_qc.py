"""The QC screen on the real app database (run 1: two BatchTopK SAEs), driven through Textual's Pilot."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Static

from store.db import Store
from store.runs import set_run_status, start_run
from tests.pilot import plain, run_app, screen_after
from tests.pilot import settle as settle_rounds
from tui.app import MiniApp
from tui.screens.home import HomeScreen
from tui.screens.qc import QCScreen
from tui.widgets.histogram import BarPlot
from tui.widgets.train_plot import CurvePlot

SIZE = (80, 24)
SPLITS = ("train", "val", "test")


def static_text(app: MiniApp, selector: str) -> str:
    return plain(app.screen.query_one(selector, Static).content)


def drive(db_path: Path, script: Callable[[MiniApp, Pilot], Coroutine[Any, Any, None]], *,
          size: tuple[int, int] = SIZE, run_id: int = 1, **open_kwargs: Any) -> MiniApp:
    """The real app on the database with QC open on `run_id`; `script` at the controls."""
    async def before(app: MiniApp, pilot: Pilot) -> None:
        await settle(app, pilot)
        app.action_open("qc", **open_kwargs)
        await settle(app, pilot)

    return run_app(MiniApp(Store.open(db_path), run_id=run_id, dataset="sample"), script, size=size,
                   before=before)


async def settle(app: MiniApp, pilot: Pilot) -> None:
    await settle_rounds(app, pilot, 2)


def qc_rows(db_path: Path, sae_id: int) -> dict[str, dict[str, Any]]:
    with Store.open(db_path, read_only=True) as db:
        rows = db.frame("SELECT * FROM qc WHERE sae_id = ?", [sae_id]).to_dicts()
    return {row["split"]: row for row in rows}


def bad_units(db_path: Path, sae_id: int, split: str) -> list[str]:
    with Store.open(db_path, read_only=True) as db:
        rows = db.con.execute(
            "SELECT u.name FROM unit_qc q JOIN units u ON u.dataset_id = 1 AND u.unit_id = q.unit_id"
            " WHERE q.sae_id = ? AND q.split = ? AND q.bad ORDER BY q.r2", [sae_id, split]).fetchall()
    return [row[0] for row in rows]


def metric_row(table_text: str, label: str) -> list[str]:
    """The cells of one row of the metrics table, e.g. 'FVU' → ['0.379', '0.404', '0.405']."""
    for line in table_text.splitlines():
        if line.strip().startswith(label):
            return line.strip()[len(label):].split()
    raise AssertionError(f"no row {label!r} in:\n{table_text}")


def read_screen(app: MiniApp) -> dict[str, Any]:
    """What the screen says about the SAE it shows, read from its widgets."""
    screen = app.screen
    assert isinstance(screen, QCScreen)
    metrics = static_text(app, "#metrics")
    return {
        "sae_id": screen.sae_id,
        "bar": static_text(app, "#sae-bar"),
        "fvu": metric_row(metrics, "FVU"),
        "pca": metric_row(metrics, "PCA (5)"),
        "dead": metric_row(metrics, "dead"),
        "bad_count": metric_row(metrics, "bad units"),
        "l0_title": str(screen.query_one("#l0-panel").border_title),
        "density_title": str(screen.query_one("#density-panel").border_title),
        "r2_title": str(screen.query_one("#unit-r2-panel").border_title),
        "bad_units": static_text(app, "#bad-units"),
        "plots": {plot.id: plot.has_data for plot in screen.query(BarPlot)}
        | {plot.id: plot.has_data for plot in screen.query(CurvePlot)},
    }


def test_qc_shows_the_first_sae_with_the_numbers_stored_for_it(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.update(read_screen(app))
        seen["title"] = app.screen.sub_title

    drive(app_db, script)
    stored = qc_rows(app_db, 1)
    assert seen["sae_id"] == 1
    assert "SAE 1 of 2 (id 1) · seed 0 · k 4 · batchtopk · d_sae 64 · mse" in seen["bar"]
    assert seen["title"] == "QC · run 1 on sample"
    assert seen["fvu"] == [f"{stored[split]['fvu']:.3f}" for split in SPLITS]
    assert seen["pca"] == [f"{stored[split]['pca_fvu']:.3f}" for split in SPLITS]
    assert seen["dead"] == [f"{100 * stored[split]['dead_fraction']:.1f}%" for split in SPLITS]
    assert seen["bad_count"] == [f"{stored[split]['n_bad_units']}/40" for split in SPLITS]
    assert f"mean {stored['val']['l0_mean']:.2f}" in seen["l0_title"] and "val" in seen["l0_title"]
    assert "0/64 dead" in seen["density_title"]
    names = bad_units(app_db, 1, "val")
    assert names and f"{len(names)} of 40 units have R² ≤ 0.1 on val" in seen["bad_units"]
    assert all(name in seen["bad_units"] for name in names)
    assert seen["plots"] == {"l0-plot": True, "density-plot": True, "unit-r2-plot": True,
                             "training-plot": True}


def test_right_bracket_switches_to_the_next_sae_and_its_numbers(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["first"] = read_screen(app)
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        seen["second"] = read_screen(app)

    drive(app_db, script)
    first, second = seen["first"], seen["second"]
    stored = qc_rows(app_db, 2)
    assert second["sae_id"] == 2 and "SAE 2 of 2 (id 2) · seed 1" in second["bar"]
    assert second["fvu"] == [f"{stored[split]['fvu']:.3f}" for split in SPLITS]
    assert second["fvu"] != first["fvu"]  # the two SAEs differ, so the switch is visible
    assert f"mean {stored['val']['l0_mean']:.2f}" in second["l0_title"]
    assert second["l0_title"] != first["l0_title"]


def test_left_bracket_steps_back_and_wraps_around(app_db: Path) -> None:
    seen: list[int | None] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        for _ in range(3):
            await pilot.press("left_square_bracket")
            await settle(app, pilot)
            seen.append(read_screen(app)["sae_id"])

    drive(app_db, script)
    assert seen == [2, 1, 2]


def test_s_cycles_the_split_of_the_split_panels(app_db: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        for _ in range(3):
            await pilot.press("s")
            await pilot.pause()
            seen.append(read_screen(app))

    drive(app_db, script)
    stored = qc_rows(app_db, 1)
    for view, split in zip(seen, ("test", "train", "val"), strict=True):
        assert f"L0 per example · {split} · mean {stored[split]['l0_mean']:.2f}" == view["l0_title"]
        assert f"· {split} ·" in view["density_title"] and f"· {split} ·" in view["r2_title"]
        names = bad_units(app_db, 1, split)
        assert f"{len(names)} of 40 units have R² ≤ 0.1 on {split}" in view["bad_units"]


def test_r2_far_below_zero_is_drawn_at_the_floor_and_counted(app_db: Path) -> None:
    with Store.open(app_db) as db:
        db.con.execute("UPDATE unit_qc SET r2 = -40.0, bad = true"
                       " WHERE sae_id = 1 AND split = 'val' AND unit_id = 5")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.update(read_screen(app))

    drive(app_db, script)
    assert seen["r2_title"] == "R² per unit · val · rule at 0.1 · 1 drawn at -1"
    assert "-40.000" in seen["bad_units"]  # the list keeps the true value


def test_opening_at_a_given_sae(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.update(read_screen(app))

    drive(app_db, script, sae_id=2)
    assert seen["sae_id"] == 2 and "SAE 2 of 2" in seen["bar"]


def test_escape_goes_back(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["before"], seen["after"] = app.screen, await screen_after(pilot, "escape")

    drive(app_db, script)
    assert isinstance(seen["before"], QCScreen)
    assert isinstance(seen["after"], HomeScreen)


def test_pagedown_scrolls_the_stacked_panels_at_80_columns(app_db: Path) -> None:
    seen: dict[str, float] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        panels = app.screen.query_one("#panels")
        seen["before"] = panels.scroll_y
        await pilot.press("pagedown")
        await pilot.pause(0.3)
        seen["after"] = panels.scroll_y

    drive(app_db, script)
    assert seen["before"] == 0 and seen["after"] > 0


def test_a_run_without_saes_says_so(app_db: Path) -> None:
    with Store.open(app_db) as db:
        run_id = start_run(db, 1, {"dataset": "sample"}, "cpu")
        set_run_status(db, run_id, "failed", "RuntimeError: out of memory")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["bar"] = static_text(app, "#sae-bar")
        await pilot.press("right_square_bracket")  # nothing to switch to: must not fail
        await pilot.pause()
        seen["screen"] = app.screen

    drive(app_db, script, run_id=run_id)
    expected = f"Run {run_id} on sample has no SAEs stored (status failed: RuntimeError: out of memory)"
    assert expected in seen["bar"]
    assert isinstance(seen["screen"], QCScreen)


# -- quality flags ------------------------------------------------------------------------------------------
def stored_flags(db_path: Path, where: str) -> list[dict[str, Any]]:
    with Store.open(db_path, read_only=True) as db:
        return db.records(f"SELECT * FROM quality_flags WHERE {where} ORDER BY sae_id, flag, split")


def read_flags(app: MiniApp) -> dict[str, Any]:
    return {"title": str(app.screen.query_one("#flags-panel").border_title),
            "lines": plain(app.screen.query_one("#flags", Static).content, width=1000).splitlines()}


def test_the_flags_panel_lists_the_shown_saes_flags_with_what_to_try(app_db: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.append(read_flags(app))
        await pilot.press("right_square_bracket")
        await settle(app, pilot)
        seen.append(read_flags(app))

    drive(app_db, script)
    for view, sae_id in zip(seen, (1, 2), strict=True):
        mine = stored_flags(app_db, f"sae_id = {sae_id}")
        assert mine, "the fixture's SAEs are flagged (l0_tail)"
        assert view["title"] == f"Flags · {len(mine)} for this SAE · 0 at import"
        assert view["lines"] == [f"⚑ {row['message']} — try: {row['suggestion']}" for row in mine]


def test_no_flags_says_so(app_db: Path) -> None:
    with Store.open(app_db) as db:
        db.con.execute("DELETE FROM quality_flags")
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.update(read_flags(app))

    drive(app_db, script)
    assert seen["title"] == "Flags"
    assert len(seen["lines"]) == 1 and seen["lines"][0].startswith("no flags")


def test_the_datasets_import_flags_are_listed_after_the_saes(app_db: Path, tmp_path: Path) -> None:
    from engine.ingest.importer import ImportOptions, import_files
    from engine.pipeline import RunSpec, train_run
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from tests.app_data import write_flagged_recording

    counts, meta = write_flagged_recording(tmp_path / "loud")
    with Store.open(app_db) as db:
        import_files(db, counts, meta, ImportOptions(name="loud"))
        run_id = train_run(db, RunSpec(dataset="loud", sae=SAEConfig(d_sae=64), ks=(2,),
                                       train=TrainConfig(epochs=1, batch_size=256))).run_id
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen.update(read_flags(app))

    drive(app_db, script, run_id=run_id)
    at_import = stored_flags(app_db, "dataset_id = 2 AND run_id IS NULL")
    mine = stored_flags(app_db, f"run_id = {run_id}")
    assert [row["flag"] for row in at_import] == ["unit_dominates_variance"]
    assert "dead_on_val" in {row["flag"] for row in mine}  # 64 latents for 8 units
    assert seen["title"] == f"Flags · {len(mine)} for this SAE · 1 at import"
    assert seen["lines"] == [*(f"⚑ {row['message']} — try: {row['suggestion']}" for row in mine),
                             f"⚑ at import: {at_import[0]['message']} — try: {at_import[0]['suggestion']}"]


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.
