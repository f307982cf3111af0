"""A sweep's grid: `--grid "arch=batchtopk,matryoshka d_sae=64,128 k=4,8 loss=mse,poisson"` as trials, and
the trials packed into stacks.

Every combination of the listed values, times `--seeds` seeds, is one trial: one SAE. Trials that differ only
in k or seed share a stack (one `mini train --k 4,8 --instances 3`), which trains them in one batched pass;
such a stack is a *pack*, the unit a worker or a cluster job trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from engine.errors import InputError
from engine.sae.config import ARCHITECTURES, LOSSES

GRID_KEYS = {
    "arch": "architecture: " + ", ".join(ARCHITECTURES),
    "d_sae": "latents per SAE (an integer ≥ 1)",
    "k": "active latents per example (an integer ≥ 1)",
    "loss": "reconstruction loss: " + ", ".join(LOSSES),
    "lr": "peak learning rate (a number > 0)",
    "batch_size": "examples per step (an integer ≥ 1)",
    "output": "clamped or linear",
}
"""What a grid may vary, with what each value must be."""

PACKED_KEYS = ("k",)
"""Keys whose values share a stack (with the seeds); the others make separate packs."""

MAX_TRIALS = 10_000
"""More trials than any sweep needs; a typo such as d_sae=1,2,…,100000 is refused before anything runs."""


@dataclass(frozen=True)
class GridValues:
    """The grid as parsed: each key with its values, in the order given."""

    values: dict[str, tuple[Any, ...]]
    """Key → its values (ints, floats or strings, checked)."""
    text: str
    """The grid as the person wrote it."""

    @property
    def n_combinations(self) -> int:
        return math.prod(len(v) for v in self.values.values())


def _value(key: str, text: str) -> Any:
    def bad(why: str) -> InputError:
        return InputError(f"--grid {key}={text}: {why} ({key} is {GRID_KEYS[key]})")

    if key in ("d_sae", "k", "batch_size"):
        try:
            number = int(text)
        except ValueError:
            raise bad("not an integer") from None
        if number < 1:
            raise bad("must be at least 1")
        return number
    if key == "lr":
        try:
            number = float(text)
        except ValueError:
            raise bad("not a number") from None
        if not math.isfinite(number) or number <= 0 or number >= 1:
            raise bad("must be finite, above 0 and below 1")
        return number
    choices = {"arch": ARCHITECTURES, "loss": LOSSES, "output": ("clamped", "linear")}[key]
    if text not in choices:
        raise bad("unknown")
    return text


def parse_grid(text: str) -> GridValues:
    """Parse `key=v1,v2 key=v3`; refuse unknown keys, repeated keys or values, and bad values, one line each."""
    if not text or not text.strip():
        raise InputError("--grid '': empty; e.g. --grid \"arch=batchtopk,matryoshka d_sae=64,128 k=4,8\"")
    values: dict[str, tuple[Any, ...]] = {}
    for item in text.split():
        key, sep, listed = item.partition("=")
        if not sep or not key or not listed:
            raise InputError(f"--grid: '{item}' is not KEY=VALUE[,VALUE…]; e.g. d_sae=64,128")
        if key not in GRID_KEYS:
            raise InputError(f"--grid: unknown key '{key}' (known: {', '.join(GRID_KEYS)})")
        if key in values:
            raise InputError(f"--grid: {key} is given twice; list its values once, comma-separated")
        parsed = tuple(_value(key, part) for part in listed.split(","))
        if len(set(parsed)) != len(parsed):
            raise InputError(f"--grid {item}: a value is listed twice")
        values[key] = parsed
    grid = GridValues(values, text.strip())
    if grid.n_combinations > MAX_TRIALS:
        raise InputError(f"--grid: {grid.n_combinations:,} combinations; at most {MAX_TRIALS:,}")
    return grid


def config_hash(config: dict[str, Any]) -> str:
    """A short, stable name for a configuration: the same settings always hash the same."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


class Trial(NamedTuple):
    """One SAE of the sweep."""

    trial_id: int
    """1, 2, … in grid order (then seed)."""
    pack_id: str
    """The stack it trains in."""
    index: int
    """Its place in the pack's stack (k outer, seed inner, as `mini train` orders them)."""
    config: dict[str, Any]
    """Every setting that made it, resolved (nothing left to choose)."""
    config_hash: str


def combinations(grid: GridValues) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (the first key varies slowest)."""
    keys = list(grid.values)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values.values())]


def pack_key(combination: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """What a stack shares: every setting but the packed ones."""
    return tuple(sorted((k, v) for k, v in combination.items() if k not in PACKED_KEYS))
