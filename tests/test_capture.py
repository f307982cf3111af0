"""Model activations: forward-hook capture, safe model loading, `mini import-activations`, and the
precipitation example end to end at a small size."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from spike_cases import assert_refused, run_mini
from torch import nn

from engine.errors import InputError
from engine.ingest.capture import capture_activations, layer_names, load_model
from store import Store

ROOT = Path(__file__).resolve().parents[1]


def _mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 2))


class Custom(nn.Module):
    """A model class of the person's own: loading it would mean running their code."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_capture_is_the_layer_output_in_input_order_whatever_the_batch():
    model = _mlp()
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model[:4](torch.from_numpy(x)).numpy()
    for batch in (1, 7, 1000):
        np.testing.assert_allclose(capture_activations(model, "3", x, batch_size=batch), expected, atol=1e-6)
    np.testing.assert_allclose(capture_activations(model, model[1], x), model[:2](torch.from_numpy(x)).detach())
    assert not model[3]._forward_hooks, "the hook is removed afterwards"
    assert layer_names(model) == ["0", "1", "2", "3", "4"]


def test_capture_refuses_unknown_layers_and_ill_fitting_inputs():
    model = _mlp()
    with pytest.raises(InputError, match=r"--layer hidden: the model has no such module \(modules: 0, 1, 2, 3, 4\)"):
        capture_activations(model, "hidden", np.zeros((4, 3)))
    with pytest.raises(InputError, match="the model refused the inputs"):
        capture_activations(model, "1", np.zeros((4, 5)))


def test_load_model_runs_no_code_from_the_file(tmp_path: Path):
    model = _mlp()
    torch.save(model, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), model(x))

    torch.save(Custom(), tmp_path / "custom.pt")
    with pytest.raises(InputError, match=r"custom.pt: holds .*Custom.*which mini does not unpickle"):
        load_model(tmp_path / "custom.pt")
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InputError, match="weights only"):
        load_model(tmp_path / "weights.pt")
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    with pytest.raises(InputError, match=r"bad\.pt: cannot read as a PyTorch model"):
        load_model(tmp_path / "bad.pt")


def _write_model_and_data(folder: Path, n: int = 300) -> np.ndarray:
    model = _mlp()
    torch.save(model, folder / "m.pt")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 3))
    pl.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "label": np.where(x[:, 0] > 0, "pos", "neg")}
                 ).write_parquet(folder / "data.parquet")
    with torch.no_grad():
        return model[:1](torch.tensor(x, dtype=torch.float32)).numpy()


def test_import_activations_cli(tmp_path: Path):
    expected = _write_model_and_data(tmp_path)
    done = run_mini("import-activations", "m.pt", "data.parquet", "--inputs", "a,b,c", "--layer", "0",
                    "--name", "toy", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        ds = db.frame("SELECT * FROM datasets").row(0, named=True)
        units = db.frame("SELECT name FROM units ORDER BY unit_id")["name"].to_list()
        counts = db.frame("SELECT example_id, unit_id, value FROM counts")
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables").iter_rows())
    assert ds["kind"] == "activations" and (ds["n_examples"], ds["n_units"]) == (300, 8)
    assert units == [f"0.{j}" for j in range(8)]
    dense = np.zeros((300, 8), dtype=np.float32)
    dense[counts["example_id"].to_numpy(), counts["unit_id"].to_numpy()] = counts["value"].to_numpy()
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    assert (dense < 0).any()  # a Linear layer's outputs are signed: kind activations allows that
    # The inputs and the target are the natural features.
    assert kinds == {"a": "continuous", "b": "continuous", "c": "continuous", "label": "categorical"}
    assert json.loads(ds["options"])["capture"] == {"layer": "0", "n_units": 8}


@pytest.mark.parametrize(("args", "words"), [
    (("--inputs", "a,b,z", "--layer", "1"), ("data.parquet", "no column 'z'", "--inputs")),
    (("--inputs", "a,b,c", "--layer", "9"), ("--layer 9", "no such module")),
    (("--inputs", "a,b", "--layer", "1"), ("the model refused the inputs",)),
    (("--inputs", "a,label,c", "--layer", "1"), ("data.parquet", "input column 'label'", "expected numbers")),
])
def test_import_activations_refuses_bad_input(tmp_path: Path, args: tuple[str, ...], words: tuple[str, ...]):
    _write_model_and_data(tmp_path)
    done = run_mini("import-activations", "m.pt", "data.parquet", *args, "--db", "new.duckdb", cwd=tmp_path)
    assert_refused(done, words)
    assert not list(tmp_path.glob("new.duckdb*"))


def test_precipitation_example_runs_the_whole_pipeline(tmp_path: Path):
    import subprocess

    done = subprocess.run([sys.executable, str(ROOT / "examples" / "precipitation_mlp.py"), "--out", str(tmp_path),
                           "--samples", "3000", "--epochs", "4", "--sae-epochs", "4"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.split("held-out accuracy ")[1].split()[0])
    assert accuracy > 0.8  # the rule is learnable; a broken example would sit near chance (1/3)
    with Store.open(tmp_path / "precip.duckdb", read_only=True) as db:
        ds = db.frame("SELECT kind, n_examples, n_units FROM datasets WHERE name = 'precipitation'").row(0)
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables").iter_rows())
        ranked = db.frame("SELECT suggestion FROM rankings WHERE sae_id = 1 ORDER BY rank LIMIT 10")
        stored = db.frame("SELECT example_id, unit_id, value FROM counts")
    assert ds == ("activations", 3000, 32)
    assert kinds == {"temperature": "continuous", "humidity": "continuous", "reflectivity": "continuous",
                     "wet_bulb": "continuous", "phase": "categorical"}
    # The top features are about the inputs, the wet-bulb temperature or the phase, not nothing.
    variables = {s.split()[0] for s in ranked["suggestion"].drop_nulls()}
    assert len(variables) >= 2 and variables <= set(kinds)
    # The CLI path on the files the example saved stores the same activations as the example's API path.
    cli = run_mini("import-activations", "precipitation_mlp.pt", "precipitation.parquet", "--inputs",
                   "temperature,humidity,reflectivity", "--layer", "2", "--db", "cli.duckdb", cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
    with Store.open(tmp_path / "cli.duckdb", read_only=True) as db:
        again = db.frame("SELECT example_id, unit_id, value FROM counts")
    assert again.sort("example_id", "unit_id").equals(stored.sort("example_id", "unit_id"))
