"""The demo pipeline: generate the sample recording, import it with its ground truth, train, rank,
accept the top suggestions automatically and validate them on the test split.

Each step the project has is run here in order; `mini demo` shows its progress.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from engine.analysis.rank import RankConfig, rank_run
from engine.errors import InputError
from engine.ingest.importer import ImportOptions, ImportResult, import_files
from engine.options import MAX_EPOCHS, check_integer, check_seed
from engine.pipeline import RunSpec, train_run
from engine.sae.config import SAEConfig
from engine.sae.train import TrainConfig, TrainProgress
from engine.validation.labels import label_feature
from engine.validation.validate import ValidateConfig
from engine.validation.validate_run import validate_run
from sample_data import SampleConfig, generate
from store import Store
from store.datasets import GroundTruth, dataset_names, get_dataset
from store.labels import labels_exist
from store.quality import flag_line, run_flags
from store.rankings import ranking_exists, top_features
from store.runs import finished_run_for, load_saes

DEMO_DATASET = "sample"
DEMO_AUTO_ACCEPT = 15
"""Top features whose first suggestion the demo accepts automatically before validating."""
DEMO_RUN = RunSpec(dataset=DEMO_DATASET, sae=SAEConfig(architecture="batchtopk", d_sae=512), ks=(8,),
                   instances=2, train=TrainConfig(epochs=30))
"""Two BatchTopK SAEs (seeds 0 and 1) so that features can be compared across instances."""


@dataclass
class DemoResult:
    dataset_id: int
    imported: ImportResult | None
    """None when the database already held the sample dataset (the demo reuses it)."""
    data_folder: Path
    run_id: int | None = None


def check_demo_options(seed: int, epochs: int | None, auto_accept: int, data_folder: str | None) -> None:
    """`mini demo`'s options, refused before the database is made."""
    check_seed("--seed", seed)
    if epochs is not None:
        check_integer("--epochs", epochs, 1, MAX_EPOCHS)
    check_integer("--auto-accept", auto_accept, 0, 1_000, "features whose first suggestion is accepted")
    if data_folder is not None and Path(data_folder).exists() and not Path(data_folder).is_dir():
        raise InputError(f"--data {data_folder}: is a file; give a folder for the sample's files")


def run_demo(db: Store, data_folder: Path, config: SampleConfig | None = None,
             report: Callable[[str], None] = lambda _: None,
             on_train_progress: Callable[[TrainProgress], None] | None = None,
             cancel: threading.Event | None = None, epochs: int | None = None,
             auto_accept: int = DEMO_AUTO_ACCEPT, rank_settings: RankConfig | None = None,
             validate_settings: ValidateConfig | None = None) -> DemoResult:
    """Generate and import the sample recording, train the demo run and rank it (each once; `rank_settings`
    and `validate_settings`: RankConfig's and ValidateConfig's defaults when None)."""
    result = _import_sample(db, data_folder, config, report)
    run_id = finished_run_for(db, result.dataset_id)
    if run_id is not None:
        report(f"run {run_id} on '{DEMO_DATASET}' is already trained; reusing it")
    else:
        spec = DEMO_RUN if epochs is None else replace(DEMO_RUN, train=replace(DEMO_RUN.train, epochs=epochs))
        report(f"training {len(spec.ks) * spec.instances} {spec.sae.architecture} SAEs (d_sae {spec.sae.d_sae}, "
               f"k {spec.ks[0]}, {spec.train.epochs} epochs)")
        outcome = train_run(db, spec, on_progress=on_train_progress, cancel=cancel)
        if outcome.status != "finished":
            report(f"training {outcome.status}; resume it with `mini train --resume {outcome.run_id}`")
            return result
        run_id = outcome.run_id
        report(f"trained run {run_id} in {outcome.seconds:.0f} s")
        for flag in run_flags(db, run_id):
            report(f"flag: {flag_line(flag)}")
    result.run_id = run_id
    if not ranking_exists(db, run_id):
        report(f"ranking the features of run {run_id} (train + val only)")
        outcome = rank_run(db, run_id, config=rank_settings)
        report(f"ranked {len(outcome.sae_ids)} SAEs in {outcome.seconds:.0f} s")
    if auto_accept and not labels_exist(db, run_id):
        accepted = auto_accept_top(db, run_id, auto_accept)
        report(f"accepted the first suggestion of the top {accepted} features automatically (source 'auto')")
        checked = validate_run(db, run_id, validate_settings)
        report(f"{checked.n_generalise} of {checked.n_testable} labels generalise to the test split, "
               f"{checked.n_validated} of them with a specific signature (validated) ({checked.seconds:.0f} s)")
    return result


def auto_accept_top(db: Store, run_id: int, n: int) -> int:
    """Accept, as source 'auto', the first suggestion of the first SAE's top-n features that have a
    significant one: the demo's stand-in for a person's review."""
    sae_id = int(load_saes(db, run_id)["sae_id"][0])
    top = top_features(db, sae_id, n).filter(pl.col("suggestion").is_not_null())
    for feature_id in top["feature_id"].to_list():
        label_feature(db, run_id, feature_id, sae_id=sae_id, accept=1, source="auto")
    return top.height


def _import_sample(db: Store, data_folder: Path, config: SampleConfig | None,
                   report: Callable[[str], None]) -> DemoResult:
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
