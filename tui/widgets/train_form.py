"""The settings form of the Train screen: the same settings and defaults as `mini train`, one line each,
with every field's problem written beside it as it is typed.

Checking the settings is plain Python (no torch), so the form answers at once; the Train screen turns
valid settings into an engine RunSpec only when training starts, inside its worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

ARCHITECTURES = ("batchtopk", "topk", "matryoshka", "relu")
LOSSES = ("mse", "msle", "poisson")
OUTPUTS = ("clamped", "linear")
DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Field:
    """One line of the form."""

    name: str
    """Key of the value (and the widget's id)."""
    label: str
    kind: str
    """'text' (an Input) or 'select'."""
    default: str
    """As `mini train` has it (tests/test_app_train.py holds the two together)."""
    hint: str
    """Said beside the field while its value is valid."""
    choices: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field("architecture", "architecture", "select", "batchtopk", "relu: L1 penalty instead of k",
          ARCHITECTURES),
    Field("d_sae", "d_sae", "text", "auto", "latents per SAE; auto: from units and bins"),
    Field("k", "k", "text", "auto", "active latents; 4,8,16: one SAE per k"),
    Field("loss", "loss", "select", "mse", "msle, poisson: spike counts only", LOSSES),
    Field("output", "output", "select", "clamped", "linear: lower FVU, mixed rows", OUTPUTS),
    Field("epochs", "epochs", "text", "auto", "auto: early stopping on val"),
    Field("batch_size", "batch size", "text", "auto", "examples per step; auto: ≥ 16 steps/epoch"),
    Field("lr", "lr", "text", "0.002", "peak learning rate of Adam"),
    Field("instances", "instances", "text", "1", "SAEs per k, seeds seed, seed+1, …"),
    Field("seed", "seed", "text", "0", "first seed (and the epoch order's)"),
    Field("normalize", "normalize", "select", "no", "yes: scale units by their train std", ("no", "yes")),
    Field("device", "device", "select", "auto", "auto: cuda, then mps, then cpu", DEVICES),
    Field("where", "where", "text", "", "epoch: e.g. speed > 5; blank: all"),
    Field("around", "around", "text", "", "epoch: EVENT:START,STOP seconds"),
)
WIDE_FIELDS = ("where", "around")
"""Fields that hold an expression rather than a number: their inputs are wider."""
FIELD_BY_NAME = {field.name: field for field in FIELDS}

CLI_FLAGS = {"--arch": "architecture", "--d-sae": "d_sae", "--k": "k", "--loss": "loss", "--output": "output",
             "--epochs": "epochs", "--batch-size": "batch_size", "--lr": "lr", "--instances": "instances",
             "--seed": "seed", "--device": "device", "--where": "where", "--around": "around"}
"""The engine words its refusals after the CLI's flags; this says which field each one is about."""


@dataclass(frozen=True)
class TrainSettings:
    """Checked settings of one run, in the types RunSpec wants."""

    architecture: str
    d_sae: int | None
    """None: chosen from the recording (as every setting left None here)."""
    ks: tuple[int, ...] | None
    loss: str
    output: str
    epochs: int | None
    batch_size: int | None
    lr: float
    instances: int
    seed: int
    normalize: bool
    device: str
    where: str | None = None
    """Analysis epoch: the predicate over each bin's metadata (None: every bin)."""
    around: str | None = None
    """Analysis epoch: EVENT:START,STOP (None: no window)."""

    @property
    def n_saes(self) -> int:
        return len(self.ks or (0,)) * self.instances

    @property
    def auto(self) -> tuple[str, ...]:
        """The settings `mini train` would choose from the recording."""
        given = {"d_sae": self.d_sae, "k": self.ks, "batch_size": self.batch_size, "epochs": self.epochs}
        return tuple(name for name, value in given.items() if value is None)

    def to_spec(self, dataset: str) -> Any:
        """The engine's RunSpec, built as `mini train` builds it (imports torch: call it in a worker)."""
        from engine.epochs import Epoch
        from engine.pipeline import RunSpec
        from engine.sae.config import SAEConfig
        from engine.sae.train import TrainConfig

        return RunSpec(
            dataset=dataset,
            sae=SAEConfig(architecture=self.architecture, d_sae=self.d_sae or 1, loss=self.loss,
                          output=self.output),  # `or 1`: a placeholder for a setting in `auto` (never 0 here)
            train=TrainConfig(epochs=self.epochs or 1, batch_size=self.batch_size or 1, lr=self.lr, seed=self.seed,
                              device=self.device),
            ks=self.ks or (1,), instances=self.instances, seed=self.seed, normalize_units=self.normalize,
            auto=self.auto,
            epoch=Epoch(self.where, self.around),
        )


def _short(text: str) -> str:
    """A typed value quoted back in a message: long ones cut, so the message still fits beside the field."""
    return text if len(text) <= 10 else text[:9] + "…"


AUTO = "auto"


FIELD_FLAGS = {field: flag for flag, field in CLI_FLAGS.items()}


def _limits(name: str) -> tuple[int, int]:
    """The range of a whole-number setting: the engine's (engine.options), which the CLI checks too."""
    from engine.options import MAX_EPOCHS, MAX_INDEX, MAX_SEED

    return {"epochs": (1, MAX_EPOCHS), "seed": (0, MAX_SEED - 1)}.get(name, (1, MAX_INDEX))


def _engine_says(name: str, check) -> str | None:
    """What engine.options says of a value, worded for the form: "epochs must be between 1 and …"."""
    from engine.errors import InputError

    try:
        check()
    except InputError as error:
        return f"{FIELD_BY_NAME[name].label} {str(error).split(': ', 1)[-1]}"
    return None


def _whole(values: dict[str, Any], name: str, errors: dict[str, str]) -> int | None:
    text = str(values[name]).strip().replace("_", "")
    label = FIELD_BY_NAME[name].label
    if text.lower() == AUTO and FIELD_BY_NAME[name].default == AUTO:
        return None
    try:
        number = int(text)
    except ValueError:
        errors[name] = (f"{label} must be a whole number, not '{_short(text)}'" if text
                        else f"{label} is empty")
        return None
    from engine.options import check_integer

    low, high = _limits(name)
    problem = _engine_says(name, lambda: check_integer(FIELD_FLAGS[name], number, low, high))
    if problem is not None:
        errors[name] = f"{problem}, not {number}"
        return None
    return number


def check_settings(values: dict[str, Any], *, dataset_kind: str | None = None, value_type: str | None = None
                   ) -> tuple[TrainSettings | None, dict[str, str]]:
    """(settings, {}) when every value is usable, else (None, {field: one sentence naming it})."""
    errors: dict[str, str] = {}
    for name in ("architecture", "loss", "output", "normalize", "device"):
        if values[name] not in FIELD_BY_NAME[name].choices:
            errors[name] = f"{name}: choose one of {', '.join(FIELD_BY_NAME[name].choices)}"
    d_sae = _whole(values, "d_sae", errors)
    epochs = _whole(values, "epochs", errors)
    batch_size = _whole(values, "batch_size", errors)
    instances = _whole(values, "instances", errors)
    seed = _whole(values, "seed", errors)

    ks: tuple[int, ...] | None = ()
    k_text = str(values["k"]).replace(" ", "")
    try:
        ks = None if k_text.lower() == AUTO else tuple(int(part) for part in k_text.split(","))
    except ValueError:
        errors["k"] = f"k must be auto or whole numbers such as 8 or 4,8,16, not '{_short(values['k'])}'"
    if ks:
        repeated = sorted({k for k in ks if ks.count(k) > 1})
        if repeated:
            errors["k"] = f"k {repeated[0]} is listed twice"
        elif min(ks) < 1:
            errors["k"] = f"k must be at least 1, not {min(ks)}"
        elif values["architecture"] != "relu" and d_sae is not None and max(ks) >= d_sae:
            errors["k"] = f"k {max(ks)} must be below d_sae ({d_sae})"

    lr_text = str(values["lr"]).strip()
    try:
        lr = float(lr_text)
    except ValueError:
        lr = math.nan
        errors["lr"] = (f"lr must be a number such as 0.002, not '{_short(lr_text)}'" if lr_text
                        else "lr is empty")
    if "lr" not in errors:
        from engine.options import MAX_LR, Bound, check_number

        problem = _engine_says("lr", lambda: check_number("--lr", lr, Bound(0, inclusive=False), Bound(MAX_LR)))
        if problem is not None:
            errors["lr"] = f"{problem}, not {lr_text}"

    where = str(values["where"]).strip() or None
    if where is not None and ";" in where:
        errors["where"] = "where must be one expression, without ';'"
    around = str(values["around"]).strip() or None
    if around is not None:
        from engine.epochs import parse_around  # only once a window is typed: it imports polars
        from engine.errors import InputError

        try:
            parse_around(around)
        except InputError as error:
            errors["around"] = str(error).split(": ", 1)[-1]

    if dataset_kind == "activations" and values["loss"] in ("msle", "poisson"):
        errors["loss"] = f"loss {values['loss']} needs spike counts, not activations"
    elif value_type == "rates" and values["loss"] == "poisson":
        errors["loss"] = "loss poisson needs whole spike counts; this dataset holds rates (e.g. smoothed counts)"
    if errors:
        return None, errors
    assert instances is not None and seed is not None
    return TrainSettings(
        architecture=values["architecture"], d_sae=d_sae, ks=ks, loss=values["loss"], output=values["output"],
        epochs=epochs, batch_size=batch_size, lr=lr, instances=instances, seed=seed,
        normalize=values["normalize"] == "yes", device=values["device"], where=where, around=around,
    ), {}


def field_for_engine_error(message: str) -> str | None:
    """The field an engine refusal ('--device cuda: no CUDA GPU …') is about, if it names one."""
    flag = message.split(" ", 1)[0].rstrip(":")
    return CLI_FLAGS.get(flag)


class TrainForm(Vertical):
    """One line per setting: label, value, and the value's problem (red) or a hint (dim)."""

    DEFAULT_CSS = """
    TrainForm {
        height: auto;
        padding: 0 1;
    }
    TrainForm .field {
        height: auto;
    }
    TrainForm .field > Label {
        width: 13;
    }
    TrainForm .field > Input, TrainForm .field > Select {
        width: 16;
    }
    TrainForm .field > Input.-wide {
        width: 24;
    }
    TrainForm .field > .message {
        width: 1fr;
        padding-left: 1;
        color: $text-muted;
    }
    TrainForm .field > .message.-error {
        color: $text-error;
    }
    TrainForm #start-row {
        height: auto;
        margin-top: 1;
    }
    TrainForm #start {
        min-width: 20;
    }
    TrainForm #plan {
        width: 1fr;
        height: auto;
        padding-left: 1;
        color: $text-muted;
    }
    TrainForm #plan.-error {
        color: $text-error;
    }
    """

    def compose(self) -> ComposeResult:
        for field in FIELDS:
            with Horizontal(classes="field", id=f"{field.name}-row"):
                yield Label(field.label)
                if field.kind == "select":
                    yield Select([(choice, choice) for choice in field.choices], value=field.default,
                                 allow_blank=False, compact=True, id=field.name)
                else:
                    yield Input(str(field.default), compact=True, id=field.name,
                                classes="-wide" if field.name in WIDE_FIELDS else "")
                yield Static(field.hint, classes="message", id=f"{field.name}-message")
        with Horizontal(id="start-row"):
            yield Button("Start  ctrl+s", id="start", compact=True, variant="primary")
            yield Static("", id="plan")

    def values(self) -> dict[str, Any]:
        """What the fields hold now (text as typed)."""
        result: dict[str, Any] = {}
        for field in FIELDS:
            widget = self.query_one(f"#{field.name}")
            assert isinstance(widget, Input | Select)
            result[field.name] = widget.value
        return result

    def show_problems(self, errors: dict[str, str]) -> None:
        """Each field's problem beside it, or its hint again once it is fixed."""
        for field in FIELDS:
            message = self.query_one(f"#{field.name}-message", Static)
            problem = errors.get(field.name)
            message.update(Text(problem) if problem else field.hint)
            message.set_class(problem is not None, "-error")

    def show_plan(self, text: str, *, error: bool = False) -> None:
        plan = self.query_one("#plan", Static)
        plan.update(text)
        plan.set_class(error, "-error")
