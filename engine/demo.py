"""The demo pipeline: generate the sample recording, import it with its ground truth, and so on.

Each step the project has is run here in order; `mini demo` shows its progress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.importer import ImportOptions, ImportResult, import_files
from sample_data import SampleConfig, generate
from store import Store
from store.datasets import GroundTruth, dataset_names, get_dataset

DEMO_DATASET = "sample"


@dataclass
class DemoResult:
    dataset_id: int
    imported: ImportResult | None
    """None when the database already held the sample dataset (the demo reuses it)."""
    data_folder: Path


def run_demo(db: Store, data_folder: Path, config: SampleConfig | None = None,
             report: Callable[[str], None] = lambda _: None) -> DemoResult:
    """Generate the sample recording into `data_folder` and import it (once) as dataset 'sample'."""
    if DEMO_DATASET in dataset_names(db):
        report(f"dataset '{DEMO_DATASET}' is already in {db.path}; reusing it")
        return DemoResult(get_dataset(db, DEMO_DATASET)["dataset_id"], None, data_folder)
    config = config or SampleConfig()
    report(f"generating the sample recording ({config.n_bins:,} bins × {config.n_units} units, seed "
           f"{config.seed})")
    recording = generate(config)
    counts_path, meta_path = recording.write(data_folder)
    report(f"wrote {counts_path} and {meta_path}")
    truth = GroundTruth(variables=recording.variable_roles, latents=recording.latents,
                        loadings=recording.loadings, activity=recording.activity)
    result = import_files(db, counts_path, meta_path,
                          ImportOptions(name=DEMO_DATASET, bin_size_s=config.bin_size_s), ground_truth=truth)
    report(f"imported '{result.name}': {result.n_examples:,} examples, {result.n_units} units, "
           f"{result.n_trials} trials; splits {result.split_sizes}")
    return DemoResult(result.dataset_id, result, data_folder)
