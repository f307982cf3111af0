"""Capture a layer's activations from a PyTorch model and import them as a dataset of kind `activations`.

The model-interpretability use of mini: the "units" are a layer's hidden units, the "examples" are
inputs, and the natural features are the inputs themselves and whatever else is known about each one
(targets, conditions). A forward hook on the chosen module records its output for every batch; the
model itself is not changed.

Saved models are loaded with `torch.load(weights_only=True)`, which refuses to run code from the file,
with the standard torch.nn layer classes allowed: a model built from torch.nn layers (nn.Sequential of
Linear, ReLU, …) loads; a custom class does not, and then the Python API (capture_activations on the
live model) is the way.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from engine.errors import InputError
from engine.ingest.importer import ImportOptions, prepare_dataset
from engine.ingest.readers import CountMatrix, read_table
from engine.options import check_integer
from store.datasets import NewDataset


def layer_names(model: nn.Module) -> list[str]:
    """Names a layer can be captured by (model.named_modules(), the model itself left out)."""
    return [name for name, _ in model.named_modules() if name]


def _module(model: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, str]:
    if isinstance(layer, nn.Module):
        name = next((n for n, m in model.named_modules() if m is layer), None)
        if name is None:
            raise InputError("the layer given is not a module of this model")
        return layer, name or "model"
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        shown = ", ".join(layer_names(model)[:20])
        raise InputError(f"--layer {layer}: the model has no such module (modules: {shown})")
    return modules[layer], layer


def capture_activations(model: nn.Module, layer: str | nn.Module, inputs: np.ndarray | torch.Tensor,
                        batch_size: int = 1024, device: str | torch.device = "cpu") -> np.ndarray:
    """The output of `layer` for every input row, [inputs × units] float32, in input order.

    The model runs in eval mode without gradients; a layer whose output has more than two dimensions
    (e.g. [batch, channels, length]) is flattened to one row per input.
    """
    check_integer("--batch-size", batch_size, 1)
    module, name = _module(model, layer)
    x = torch.as_tensor(np.asarray(inputs, dtype=np.float32) if not torch.is_tensor(inputs) else inputs)
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if not torch.is_tensor(output):
            raise InputError(f"layer {name}: its output is a {type(output).__name__}, not a tensor; pick another")
        captured.append(output.detach().reshape(output.shape[0], -1).float().cpu())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                model(x[start:start + batch_size].to(device))
    except RuntimeError as error:  # shape mismatches: the person's inputs do not fit the model
        raise InputError(f"the model refused the inputs ({str(error).splitlines()[0][:200]})") from None
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise InputError("no inputs: nothing to capture")
    values = torch.cat(captured).numpy()
    if len(values) != len(x):
        raise InputError(f"layer {name} ran {len(values)} times for {len(x)} inputs (is it used more than once?)")
    return values


def _torch_nn_classes() -> list[type]:
    return [c for _, c in inspect.getmembers(nn) if inspect.isclass(c) and issubclass(c, nn.Module)]


def load_model(path: str | Path) -> nn.Module:
    """A whole model saved with torch.save(model, path), built from torch.nn layers (no code is run)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    try:
        with torch.serialization.safe_globals(_torch_nn_classes()):
            model = torch.load(path, weights_only=True, map_location="cpu")
    except _pickle_errors() as error:
        text = str(error)
        if "GLOBAL" in text or "Unsupported global" in text:
            name = text.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in text else "a custom class"
            raise InputError(f"{path}: holds {name}, which mini does not unpickle (it could run code); build the "
                             "model from torch.nn layers, or use engine.ingest.capture.capture_activations") from None
        raise InputError(f"{path}: cannot read as a PyTorch model ({text.strip().splitlines()[0][:160]})") from None
    if isinstance(model, dict):
        raise InputError(f"{path}: holds weights only (a state_dict); save the whole model with "
                         "torch.save(model, path)")
    if not isinstance(model, nn.Module):
        raise InputError(f"{path}: holds a {type(model).__name__}, not a torch.nn.Module")
    return model


def _pickle_errors() -> tuple[type[BaseException], ...]:
    import pickle
    import zipfile

    return (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            AttributeError, KeyError)


def read_inputs(path: str | Path, input_cols: list[str]) -> tuple[np.ndarray, pl.DataFrame]:
    """The model's inputs (float32, columns in the order given) and the whole table (the metadata)."""
    table = read_table(path, "inputs")
    missing = [c for c in input_cols if c not in table.columns]
    if missing:
        raise InputError(f"{path}: no column '{missing[0]}' (--inputs); columns are {', '.join(table.columns)}")
    if len(set(input_cols)) != len(input_cols):
        raise InputError(f"--inputs {','.join(input_cols)}: a column is named twice")
    for name in input_cols:
        column = table[name]
        if not column.dtype.is_numeric():
            raise InputError(f"{path}: input column '{name}' is {column.dtype}, expected numbers")
        bad = column.is_null() | (column.cast(pl.Float64).is_nan() | column.cast(pl.Float64).is_infinite())
        if bad.any():
            row = int(bad.arg_max())  # type: ignore[arg-type]
            raise InputError(f"{path}: input column '{name}' row {row} is {column[row]}; inputs must be finite")
    return table.select(input_cols).cast(pl.Float32).to_numpy(), table


def prepare_activation_dataset(values: np.ndarray, meta: pl.DataFrame, options: ImportOptions, *, layer: str,
                               source: str) -> tuple[NewDataset, list[str]]:
    """Activations [inputs × units] with one metadata row per input → the NewDataset to store."""
    names = [f"{layer}.{j}" for j in range(values.shape[1])]
    matrix = CountMatrix(values=values, unit_names=names, label=f"layer {layer}")
    new, notes = prepare_dataset(matrix, meta, replace(options, kind="activations"),
                                 meta_label=source, source=source)
    new.options["capture"] = {"layer": layer, "n_units": values.shape[1]}
    return new, notes
