"""Datasets: one imported recording with its units, trials, examples, counts and natural features."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import pyarrow as pa

from store.db import Store
from store.errors import StoreError


@dataclass
class GroundTruth:
    """Planted structure of a synthetic recording, stored so the whole pipeline can be scored."""

    variables: pl.DataFrame
    """variable, role ('encoded' or 'distractor')."""
    latents: pl.DataFrame
    """latent_id, name, variable, predicate, category, low, high."""
    loadings: pl.DataFrame
    """latent_id, unit_id, weight: which units each latent drives and how strongly."""
    activity: pl.DataFrame
    """example_id, latent_id, value: each latent's nonzero intensity per example."""


@dataclass
class NewDataset:
    """A validated recording ready to be written in one transaction (built by engine.ingest.importer)."""

    name: str
    source: str
    kind: str
    bin_size_s: float | None
    trial_source: str
    """'column:<name>' when trials came from metadata, 'blocks' when they are contiguous blocks."""
    split_seed: int
    options: dict[str, Any]
    units: pl.DataFrame
    trials: pl.DataFrame
    examples: pl.DataFrame
    counts: pl.DataFrame | pa.Table
    """Nonzero entries only: example_id, unit_id, value."""
    variables: pl.DataFrame
    values: pl.DataFrame
    """Long format, missing values have no row: example_id, variable, value, category."""
    ground_truth: GroundTruth | None = field(default=None)
    flags: pl.DataFrame | None = field(default=None)
    """quality_flags rows found at import (sae_id null), e.g. one unit holding most of the variance."""
    value_type: str | None = None
    """'counts' (whole numbers), 'rates' (non-negative, not all whole: smoothed counts) or 'activations';
    None: 'activations' for kind activations, else 'counts'."""
    unit_attributes: pl.DataFrame | None = field(default=None)
    """unit_id, key, value (text): attributes of the units given at import (`--unit-meta`, NWB unit columns)."""


def add_dataset(db: Store, new: NewDataset) -> int:
    """Write a whole dataset atomically and return its dataset_id."""
    with db.transaction():
        if db.scalar("SELECT count(*) FROM datasets WHERE name = ?", [new.name]):
            raise StoreError(
                f"{db.path}: a dataset named '{new.name}' already exists; choose another --name"
            )
        dataset_id = int(db.scalar("SELECT coalesce(max(dataset_id), 0) + 1 FROM datasets"))
        db.con.execute(
            "INSERT INTO datasets (dataset_id, name, source, kind, value_type, bin_size_s, n_examples, n_units,"
            " n_trials, trial_source, split_seed, options) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                dataset_id, new.name, new.source, new.kind,
                new.value_type or ("activations" if new.kind == "activations" else "counts"),
                new.bin_size_s, new.examples.height,
                new.units.height, new.trials.height, new.trial_source, new.split_seed,
                json.dumps(new.options, sort_keys=True),
            ],
        )
        tables: list[tuple[str, pl.DataFrame | pa.Table]] = [
            ("units", new.units), ("trials", new.trials), ("examples", new.examples),
            ("counts", new.counts), ("natural_variables", new.variables), ("natural_values", new.values),
        ]
        if new.ground_truth is not None:
            truth = new.ground_truth
            tables += [
                ("ground_truth_variables", truth.variables), ("ground_truth_latents", truth.latents),
                ("ground_truth_loadings", truth.loadings), ("ground_truth_activity", truth.activity),
            ]
        if new.unit_attributes is not None and new.unit_attributes.height:
            tables.append(("unit_attributes", new.unit_attributes))
        if new.flags is not None and new.flags.height:
            tables.append(("quality_flags", new.flags))
        for table, frame in tables:
            db.insert_frame(table, _with_dataset_id(frame, dataset_id))
    return dataset_id


def _with_dataset_id(frame: pl.DataFrame | pa.Table, dataset_id: int) -> pa.Table:
    arrow = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
    return arrow.append_column("dataset_id", pa.array([dataset_id] * arrow.num_rows, pa.int32()))


def dataset_names(db: Store) -> list[str]:
    return [row[0] for row in db.con.execute("SELECT name FROM datasets ORDER BY dataset_id").fetchall()]


def get_dataset(db: Store, name: str) -> dict[str, Any]:
    """The datasets row for `name`, or a StoreError that lists the names there are."""
    row = db.row("SELECT * FROM datasets WHERE name = ?", [name])
    if row is None:
        have = ", ".join(dataset_names(db)) or "none yet"
        raise StoreError(f"{db.path}: no dataset named '{name}' (datasets: {have})")
    row["options"] = json.loads(row["options"])
    return row



def load_examples(db: Store, dataset_id: int) -> pl.DataFrame:
    """example_id, trial_id, time_s, split in example order."""
    return db.frame(
        "SELECT example_id, trial_id, time_s, split FROM examples WHERE dataset_id = ? ORDER BY example_id",
        [dataset_id],
    )


def load_unit_names(db: Store, dataset_id: int) -> list[str]:
    """Unit names in unit_id order."""
    return [r[0] for r in db.con.execute("SELECT name FROM units WHERE dataset_id = ? ORDER BY unit_id",
                                         [dataset_id]).fetchall()]


def load_unit_attributes(db: Store, dataset_id: int) -> dict[str, dict[int, str]]:
    """Attributes of the dataset's units: key -> unit_id -> value (text)."""
    out: dict[str, dict[int, str]] = {}
    for key, unit_id, value in db.con.execute("SELECT key, unit_id, value FROM unit_attributes WHERE dataset_id = ?"
                                              " ORDER BY key, unit_id", [dataset_id]).fetchall():
        out.setdefault(key, {})[int(unit_id)] = value
    return out


def load_counts_long(db: Store, dataset_id: int) -> pa.Table:
    """Nonzero counts as Arrow columns example_id, unit_id, value (the engine densifies them)."""
    return db.con.sql(
        "SELECT example_id, unit_id, value FROM counts WHERE dataset_id = ?", params=[dataset_id]
    ).to_arrow_table()


def n_counts(db: Store, dataset_id: int) -> int:
    """How many nonzero counts the dataset stores (the rows load_counts_long returns)."""
    return db.con.execute("SELECT count(*) FROM counts WHERE dataset_id = ?", [dataset_id]).fetchall()[0][0]


def load_natural_variables(db: Store, dataset_id: int) -> pl.DataFrame:
    return db.frame(
        "SELECT variable, kind, period, n_levels, n_missing, source FROM natural_variables"
        " WHERE dataset_id = ? ORDER BY variable",
        [dataset_id],
    )


def variable_levels(db: Store, dataset_id: int, variable: str) -> list[str]:
    """The distinct categories a categorical variable takes in the dataset."""
    return [r[0] for r in db.con.execute(
        "SELECT DISTINCT category FROM natural_values WHERE dataset_id = ? AND variable = ? AND category IS NOT NULL"
        " ORDER BY 1", [dataset_id, variable]).fetchall()]


def load_natural_values(db: Store, dataset_id: int) -> pl.DataFrame:
    return db.frame(
        "SELECT example_id, variable, value, category FROM natural_values WHERE dataset_id = ?"
        " ORDER BY variable, example_id",
        [dataset_id],
    )
