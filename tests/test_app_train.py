"""The Train screen on the real app database: its form, and real (tiny) trainings started, watched,
cancelled and quit from the keyboard through Textual's Pilot."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, ProgressBar, Select, Static

from store.db import Store
from tests.conftest import absent_device
from tests.pilot import plain as plain_text
from tests.pilot import run_app, screen_after, until
from tests.pilot import settle as settle_rounds
from tui.app import MiniApp
from tui.screens.help import HelpScreen
from tui.screens.home import HomeScreen
from tui.screens.qc import QCScreen
from tui.screens.train import TrainScreen
from tui.widgets.train_form import FIELDS, check_settings
from tui.widgets.train_plot import CurvePlot

SIZE = (80, 24)
TINY = {"d_sae": "16", "k": "4", "epochs": "2", "batch_size": "256"}
"""A run of 1 SAE that trains in well under a second on the fixture's 5,558 train examples."""
LONG = {"d_sae": "16", "k": "4", "epochs": "1000", "batch_size": "64"}
"""A run that would take minutes: for cancelling it (86 steps an epoch, a progress event every 20)."""
QUIT = {"d_sae": "16", "k": "4", "epochs": "100", "batch_size": "64"}
"""Tens of seconds of training (8,600 steps): quit right after its first step, then resumed to the end (at 20
epochs a quiet machine finished the run before `q` was handled)."""


plain = partial(plain_text, width=200)  # the status lines are long: read them unwrapped
wait_until = partial(until, timeout=120)  # a real training runs in these tests


def drive(db_path: Path, script: Callable[[MiniApp, Pilot], Coroutine[Any, Any, None]], *,
          size: tuple[int, int] = SIZE) -> MiniApp:
    """The real app with Train open on the fixture's 'sample' dataset; `script` at the controls."""
    async def before(app: MiniApp, pilot: Pilot) -> None:
        await app.workers.wait_for_complete()
        app.action_open("train")
        await pilot.pause()
        await settle_rounds(app, pilot)

    return run_app(MiniApp(Store.open(db_path), dataset="sample"), script, size=size, before=before)


async def fill(app: MiniApp, pilot: Pilot, values: dict[str, str]) -> None:
    """Type each value into its field the way a person does: focus it (selects the text), type over it."""
    for name, value in values.items():
        app.screen.query_one(f"#{name}", Input).focus()
        await pilot.pause()
        await pilot.press(*value)
    await pilot.pause()


async def train_until_progress(app: MiniApp, pilot: Pilot, values: dict[str, str]) -> TrainScreen:
    """Fill Train's form with `values`, press ctrl+s and wait until the progress bar knows its total
    (the trainer has started on its thread); returns the screen that trains."""
    screen = app.screen
    assert isinstance(screen, TrainScreen)
    await fill(app, pilot, values)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: screen.query_one("#progress", ProgressBar).total is not None)
    return screen


def message(app: MiniApp, name: str) -> tuple[str, bool]:
    """(text beside a field, shown as an error?)"""
    widget = app.screen.query_one(f"#{name}-message", Static)
    return plain(widget.content).strip(), widget.has_class("-error")


def run_rows(db_path: Path) -> list[dict[str, Any]]:
    with Store.open(db_path, read_only=True) as db:
        return db.frame("SELECT run_id, status, config, examples_seen FROM runs ORDER BY run_id").to_dicts()


# -- the form ----------------------------------------------------------------------------------------------
def test_form_defaults_are_mini_trains() -> None:
    """The form starts where `mini train --dataset X` starts, and the engine's own defaults agree."""
    from engine.pipeline import RunSpec
    from engine.sae.config import SAEConfig
    from engine.sae.train import TrainConfig
    from tui.cli import build_parser

    cli = vars(build_parser().parse_args(["train", "--dataset", "x"]))
    defaults = {field.name: field.default for field in FIELDS}
    settings, errors = check_settings(defaults)
    assert errors == {} and settings is not None
    assert settings.architecture == cli["arch"] == SAEConfig().architecture
    # Width, k, batch size and epochs are chosen from the recording unless given, in both.
    assert settings.d_sae is cli["d_sae"] is None
    assert settings.ks is cli["k"] is None
    assert settings.epochs is cli["epochs"] is None
    assert settings.batch_size is cli["batch_size"] is None
    assert settings.to_spec("x").auto == ("d_sae", "k", "batch_size", "epochs")
    assert settings.loss == cli["loss"] == SAEConfig().loss
    assert settings.output == cli["output"] == SAEConfig().output
    assert settings.lr == cli["lr"] == TrainConfig().lr
    assert settings.instances == cli["instances"] == RunSpec.__dataclass_fields__["instances"].default
    assert settings.seed == cli["seed"] == TrainConfig().seed
    assert settings.normalize is cli["normalize"] is False
    assert settings.device == cli["device"] == TrainConfig().device
    assert settings.where is cli["where"] is None and settings.around is cli["around"] is None
    assert not RunSpec(dataset="x", sae=SAEConfig(), train=TrainConfig()).epoch.is_set  # every bin


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"d_sae": "12.5"}, "d_sae", "d_sae must be a whole number, not '12.5'"),
        ({"d_sae": "0"}, "d_sae", "d_sae must be at least 1, not 0"),
        ({"d_sae": "16", "k": "16"}, "k", "k 16 must be below d_sae (16)"),
        ({"k": "4,x"}, "k", "k must be auto or whole numbers such as 8 or 4,8,16, not '4,x'"),
        ({"lr": "auto"}, "lr", "lr must be a number such as 0.002, not 'auto'"),
        ({"instances": "auto"}, "instances", "instances must be a whole number, not 'auto'"),
        ({"k": "4,4"}, "k", "k 4 is listed twice"),
        ({"lr": "-0.01"}, "lr", "lr must be a finite number above 0 and at most 1, not -0.01"),
        ({"lr": "1e30"}, "lr", "lr must be a finite number above 0 and at most 1, not 1e30"),
        ({"epochs": "99999999"}, "epochs", "epochs must be between 1 and 1,000,000, not 99999999"),
        ({"batch_size": str(2**80)}, "batch_size", f"batch size must be at least 1, not {2**80}"),
        ({"lr": "fast"}, "lr", "lr must be a number such as 0.002, not 'fast'"),
        ({"epochs": ""}, "epochs", "epochs is empty"),
        ({"instances": "two"}, "instances", "instances must be a whole number, not 'two'"),
        ({"seed": "-1"}, "seed", "seed must be between 0 and 4,294,967,295, not -1"),
        ({"batch_size": "0"}, "batch_size", "batch size must be at least 1, not 0"),
    ],
)
def test_check_settings_names_the_field_and_the_problem(changes: dict[str, str], field: str,
                                                       words: str) -> None:
    values = {f.name: f.default for f in FIELDS} | changes
    settings, errors = check_settings(values)
    assert settings is None
    assert errors == {field: words}


def test_count_losses_are_refused_for_activations() -> None:
    values = {f.name: f.default for f in FIELDS} | {"loss": "poisson"}
    assert check_settings(values, dataset_kind="activations")[1] == {
        "loss": "loss poisson needs spike counts, not activations"}
    assert check_settings(values, dataset_kind="spike_counts")[1] == {}


def test_poisson_is_refused_for_rates_and_msle_is_not() -> None:
    values = {f.name: f.default for f in FIELDS} | {"loss": "poisson"}
    assert check_settings(values, dataset_kind="spike_counts", value_type="rates")[1] == {
        "loss": "loss poisson needs whole spike counts; this dataset holds rates (e.g. smoothed counts)"}
    assert check_settings(values, dataset_kind="spike_counts", value_type="counts")[1] == {}
    assert check_settings(values | {"loss": "msle"}, dataset_kind="spike_counts", value_type="rates")[1] == {}


def test_bad_values_are_marked_beside_their_fields_and_ctrl_s_refuses(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await fill(app, pilot, {"d_sae": "16", "k": "32", "lr": "-1", "epochs": "two"})
        seen["messages"] = {name: message(app, name) for name in ("d_sae", "k", "lr", "epochs", "seed")}
        seen["plan"] = plain(app.screen.query_one("#plan", Static).content).strip()
        await pilot.press("ctrl+s")
        await pilot.pause()
        seen["training"] = app.screen.training
        seen["focused"] = app.focused.id if app.focused else None
        # Fixing them brings each hint back, and the plan says what would train.
        await fill(app, pilot, {"k": "4,8", "lr": "0.01", "epochs": "3"})
        seen["fixed"] = {name: message(app, name) for name in ("k", "lr", "epochs")}
        seen["plan_fixed"] = plain(app.screen.query_one("#plan", Static).content).strip()

    drive(app_db, script)
    messages = seen["messages"]
    assert messages["d_sae"] == ("latents per SAE; auto: from units and bins", False)
    assert messages["k"] == ("k 32 must be below d_sae (16)", True)
    assert messages["lr"] == ("lr must be a finite number above 0 and at most 1, not -1", True)
    assert messages["epochs"] == ("epochs must be a whole number, not 'two'", True)
    assert messages["seed"][1] is False
    assert seen["plan"] == "fix k, epochs, lr first"
    assert seen["training"] is False and seen["focused"] == "k"  # the first field to fix
    assert [row["run_id"] for row in run_rows(app_db)] == [1]  # nothing was written
    assert all(not error for _, error in seen["fixed"].values())
    # The batch size is still 'auto': chosen from the recording when training starts.
    assert seen["plan_fixed"] == "2 SAEs · batch_size chosen from the recording"


def test_tab_and_shift_tab_move_through_the_settings(app_db: Path) -> None:
    order: list[str | None] = []

    async def script(app: MiniApp, pilot: Pilot) -> None:
        order.append(app.focused.id if app.focused else None)
        for key in ("tab", "tab", "tab", "shift+tab"):
            await pilot.press(key)
            await pilot.pause()
            order.append(app.focused.id if app.focused else None)

    drive(app_db, script)
    assert order == ["architecture", "d_sae", "k", "loss", "k"]  # opens on the first field


def test_a_choice_is_made_from_the_keyboard_and_relu_needs_no_k_below_d_sae(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        await fill(app, pilot, {"d_sae": "16", "k": "32"})
        seen["before"] = message(app, "k")
        app.screen.query_one("#architecture", Select).focus()
        await pilot.pause()
        await pilot.press("enter")  # opens the list
        await pilot.pause()
        await pilot.press("end", "enter")  # relu is the last choice
        await pilot.pause()
        seen["architecture"] = app.screen.query_one("#architecture", Select).value
        seen["after"] = message(app, "k")

    drive(app_db, script)
    assert seen["before"] == ("k 32 must be below d_sae (16)", True)
    assert seen["architecture"] == "relu"
    assert seen["after"][1] is False


# -- training ----------------------------------------------------------------------------------------------
def test_ctrl_s_trains_a_real_run_with_live_progress_then_o_opens_its_qc(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        await fill(app, pilot, TINY)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.last_run_id is not None or not screen.training)
        await pilot.pause()
        bar = screen.query_one("#progress", ProgressBar)
        seen["bar"] = (bar.total, bar.progress)
        seen["events"] = screen.history.snapshot()
        seen["plots"] = {plot.id: plot.has_data for plot in screen.query(CurvePlot)}
        seen["status"] = plain(screen.query_one("#train-status", Static).content)
        seen["quality"] = plain(screen.query_one("#rate", Static).content)
        seen["run_id"] = (screen.last_run_id, app.run_id)
        seen["form_after"] = screen.query_one("#form").disabled
        await pilot.press("o")
        await app.workers.wait_for_complete()
        await pilot.pause()
        seen["qc"] = app.screen
        seen["qc_bar"] = plain(app.screen.query_one("#sae-bar", Static).content)

    drive(app_db, script)
    events = seen["events"]
    assert len(events) >= 2 and events[-1].step == events[-1].total_steps == 2 * (5558 // 256)
    # The last event reached the screen (it is always posted, whatever the throttle).
    assert seen["bar"] == (events[-1].total_steps, events[-1].total_steps)
    assert seen["plots"] == {"loss-plot": True, "l0-plot": True, "dead-plot": True}
    assert seen["run_id"] == (2, 2)
    assert "Run 2 finished: 1 SAE, " in seen["status"]
    assert "val: FVU" in seen["quality"] and "PCA" in seen["quality"]
    assert seen["form_after"] is False

    run = run_rows(app_db)[-1]
    assert run["run_id"] == 2 and run["status"] == "finished"
    assert run["examples_seen"] == events[-1].examples_seen
    import json

    config = json.loads(run["config"])
    assert config["sae"]["d_sae"] == 16 and config["ks"] == [4] and config["train"]["epochs"] == 2
    assert config["train"]["batch_size"] == 256 and config["dataset"] == "sample"
    with Store.open(app_db, read_only=True) as db:
        assert db.scalar("SELECT count(*) FROM saes WHERE run_id = 2 AND d_sae = 16 AND k = 4") == 1
        assert db.scalar("SELECT count(*) FROM qc JOIN saes USING (sae_id) WHERE run_id = 2") == 3
    assert isinstance(seen["qc"], QCScreen) and seen["qc"].run_id == 2
    assert "SAE 1 of 1" in seen["qc_bar"] and "d_sae 16" in seen["qc_bar"]


def test_the_app_answers_keys_while_training_and_c_cancels(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await train_until_progress(app, pilot, LONG)
        seen["form_while_training"] = (screen.query_one("#form").disabled, app.focused)
        # Help opens and closes while the trainer runs on its thread.
        await pilot.press("f1")
        await pilot.pause()
        seen["help"] = app.screen
        await pilot.press("escape")
        await pilot.pause()
        seen["back"] = app.screen
        # esc does not leave a training behind.
        await pilot.press("escape")
        await pilot.pause()
        seen["after_escape"] = (app.screen, screen.training)
        events_before = len(screen.history.snapshot())
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.training)
        await pilot.pause()
        seen["events"] = (events_before, screen.history.snapshot())
        seen["status"] = plain(screen.query_one("#train-status", Static).content)
        seen["rate"] = plain(screen.query_one("#rate", Static).content)
        seen["run_id"] = (screen.last_run_id, app.run_id)
        seen["open_qc_shown"] = screen.query_one("#open-qc").has_class("-shown")

    drive(app_db, script)
    assert seen["form_while_training"] == (True, None)  # no text box to swallow c, q or esc
    assert isinstance(seen["help"], HelpScreen)
    assert isinstance(seen["back"], TrainScreen)
    assert isinstance(seen["after_escape"][0], TrainScreen) and seen["after_escape"][1] is True
    events_before, events = seen["events"]
    assert events_before >= 1
    run = run_rows(app_db)[-1]
    assert run["run_id"] == 2 and run["status"] == "cancelled"
    total = events[-1].total_steps
    assert 0 < run["examples_seen"] < total * 64  # stopped long before the 1000 epochs
    assert seen["run_id"] == (2, 2)
    assert "Run 2 cancelled after" in seen["status"] and "mini train --resume 2" in seen["rate"]
    assert seen["open_qc_shown"]
    with Store.open(app_db, read_only=True) as db:  # what it learned so far is stored
        assert db.scalar("SELECT count(*) FROM saes WHERE run_id = 2") == 1


def test_stages_are_said_before_the_first_step_and_progress_comes_within_the_first_epoch(app_db: Path) -> None:
    shown: list[str] = []
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = app.screen
        status = screen._status

        def record(text: Any) -> None:
            shown.append(plain(text).strip())
            status(text)

        screen._status = record
        await train_until_progress(app, pilot, LONG)
        seen["first"] = screen.history.snapshot()[0]
        await pilot.press("c")
        await wait_until(pilot, lambda: not screen.training)

    drive(app_db, script)
    starting = [line for line in shown if line.startswith("Starting")]
    training = next(i for i, line in enumerate(shown) if line.startswith("Training 1 SAE on sample"))
    assert starting[0] == "Starting 1 SAE on sample…"
    assert any(line.startswith("Starting: reading dataset 'sample' (") for line in starting)
    assert "Starting: building 1 SAE (d_sae 16, k 4) from 5,558 training examples…" in starting
    assert all(shown.index(line) < training for line in starting)  # every stage before training moved
    # The first progress is the first step's, not the log_every-th's, long before an epoch (86 steps) ends.
    first = seen["first"]
    assert (first.step, first.epoch, first.val_loss) == (1, 0, None)


def test_q_while_training_quits_at_once_leaving_a_resumable_cancelled_run(app_db: Path, cli) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = await train_until_progress(app, pilot, QUIT)
        seen["steps"] = screen.history.snapshot()[-1].total_steps
        await pilot.press("q")
        await wait_until(pilot, lambda: app._exit, timeout=120)
        seen["status"] = plain(screen.query_one("#train-status", Static).content)

    app = drive(app_db, script)
    assert "Run 2 cancelled for quitting; mini train --resume 2 continues it" in seen["status"]
    assert app.return_code == 0
    with Store.open(app_db, read_only=True) as db:
        run = db.records("SELECT status, message FROM runs WHERE run_id = 2")[0]
        assert db.scalar("SELECT count(*) FROM saes WHERE run_id = 2") == 0  # nothing encoded or stored
    assert run["status"] == "cancelled"
    assert run["message"].startswith("cancelled when the app quit; mini train --resume 2 continues from ")

    resumed = cli("train", "--resume", "2", "--db", str(app_db), timeout=600)  # 8,600 steps: minutes when busy
    assert resumed.returncode == 0, resumed.stderr
    with Store.open(app_db, read_only=True) as db:
        run = db.records("SELECT status, examples_seen FROM runs WHERE run_id = 2")[0]
        assert db.scalar("SELECT count(*) FROM saes WHERE run_id = 2 AND d_sae = 16 AND k = 4") == 1
    assert run == {"status": "finished", "examples_seen": seen["steps"] * 64}


def test_one_training_at_a_time_and_going_home_cancels_it_with_a_word(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        first = await train_until_progress(app, pilot, LONG)
        app.action_open("train")  # a second Train screen over the one that trains
        await pilot.pause()
        second = app.screen
        await fill(app, pilot, TINY)
        await pilot.press("ctrl+s")
        await pilot.pause()
        seen["second"] = (second is not first, second.training)
        await app.run_action("home")  # the palette's Home closes both
        await pilot.pause()
        seen["home"] = app.screen
        await wait_until(pilot, lambda: any("was cancelled when Train closed" in n.message
                                            for n in app._notifications))

    drive(app_db, script)
    assert seen["second"] == (True, False)
    assert isinstance(seen["home"], HomeScreen)
    run = run_rows(app_db)[-1]
    assert run["run_id"] == 2 and run["status"] == "cancelled"


def test_escape_goes_back_when_not_training(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        seen["before"] = app.screen
        app.screen.set_focus(None)  # esc from anywhere on the screen, not only from a text box
        seen["after"] = await screen_after(pilot, "escape")

    drive(app_db, script)
    assert isinstance(seen["before"], TrainScreen)
    assert isinstance(seen["after"], HomeScreen)


def test_q_quits_when_not_training(app_db: Path) -> None:
    async def script(app: MiniApp, pilot: Pilot) -> None:
        app.screen.query_one("#architecture", Select).focus()  # q in a text box would be typed
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()

    app = drive(app_db, script)
    assert app._exit and app.return_code == 0


def test_a_setting_the_engine_refuses_is_marked_on_its_field(app_db: Path) -> None:
    absent = absent_device()
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = app.screen
        await fill(app, pilot, TINY)
        device = screen.query_one("#device", Select)
        device.value = absent
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.training)
        await pilot.pause()
        seen["device"] = message(app, "device")
        seen["focused"] = app.focused.id if app.focused else None

    drive(app_db, script)
    text, is_error = seen["device"]
    assert is_error and text.startswith(f"--device {absent}:")
    assert seen["focused"] == "device"
    assert [row["run_id"] for row in run_rows(app_db)] == [1]  # refused before any run row


def test_an_epoch_set_in_the_form_is_checked_trained_on_and_stored(app_db: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: MiniApp, pilot: Pilot) -> None:
        screen = app.screen
        await fill(app, pilot, TINY)
        around, where = screen.query_one("#around", Input), screen.query_one("#where", Input)
        around.value = "reward:1,-1"  # checked as it is typed
        await pilot.pause()
        seen["around"] = message(app, "around")
        around.value = ""
        where.value = "spede > 20"  # only the engine can judge a predicate: refused at the start, on its field
        await pilot.pause()
        seen["plan"] = plain(screen.query_one("#plan", Static).content).strip()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: not screen.training)
        await pilot.pause()
        seen["where"] = message(app, "where")
        seen["focused"] = app.focused.id if app.focused else None
        where.value = "phase = 'run'"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: screen.last_run_id is not None and not screen.training)

    drive(app_db, script)
    assert seen["around"] == ("START 1 is after STOP -1", True)
    assert seen["plan"] == "1 SAE · on the epoch's train bins"
    text, is_error = seen["where"]
    assert is_error and text.startswith('--where "spede > 20": unknown column \'spede\'')
    assert seen["focused"] == "where"
    assert [row["run_id"] for row in run_rows(app_db)] == [1, 2]  # the refused start wrote nothing
    with Store.open(app_db, read_only=True) as db:
        stored = db.records("SELECT where_sql, around, n_train FROM analysis_epochs WHERE run_id = 2")
        running = db.scalar("SELECT count(*) FROM examples e JOIN natural_values v USING (dataset_id, example_id)"
                            " WHERE e.split = 'train' AND v.variable = 'phase' AND v.category = 'run'")
        assert db.scalar("SELECT n_examples FROM qc JOIN saes USING (sae_id) WHERE run_id = 2 AND split = 'train'"
                         ) == running
    assert stored == [{"where_sql": "phase = 'run'", "around": None, "n_train": running}]


# The screen's snapshots at 80×24 and 120×40 are in tests/test_app_layout.py.
