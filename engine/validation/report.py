"""A run's Markdown report, with its tables beside it as CSV or Parquet.

The report is what a scientist attaches to a lab notebook or a paper's supplement: the dataset and its
splits, the SAE settings, quality against PCA and NMF, the quality flags with what to try next, the
ranked and labelled features, and every validation with its numbers, its neural signature and a text
plot of the feature's tuning. Everything comes from the database; nothing is recomputed, so the report
shows exactly what is stored.

Files are written to temporary names and renamed at the end: an interrupted report leaves the previous
one intact. The Markdown primitives (tables, bar charts) are in report_text.py, the validation section in
report_validations.py; the queries in store/report.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from engine.analysis.tuning import ranked_rows
from engine.epochs import STEP_VERBS, Epoch, read_splits
from engine.errors import InputError
from engine.options import check_integer
from engine.sae.unit_selection import roles_text
from engine.validation.report_text import markdown_table, number_text
from engine.validation.report_validations import FeatureTunings, validations_section
from store import Store
from store.datasets import load_natural_variables
from store.epochs import run_epochs
from store.quality import flag_line
from store.report import report_tables, split_sizes, variable_summary
from store.review import run_dataset
from store.runs import get_run, run_units

TABLE_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ReportConfig:
    """What the report holds."""

    top: int = 30
    """Ranked features listed per SAE (the tables beside the report hold all of them)."""
    tuning_top: int = 5
    """Top-ranked features per SAE whose split tuning and peri-event histograms the report draws (every
    validated feature's are drawn in its validation section as well)."""
    table_format: str = "csv"
    """Format of the tables written beside the report: csv or parquet."""

    def __post_init__(self) -> None:
        check_integer("--top", self.top, 1)
        check_integer("tuning_top", self.tuning_top, 0)


@dataclass
class ReportOutcome:
    path: Path
    tables: list[Path]
    n_labels: int
    n_validations: int
    """Validation attempts of the run (every one, the validations table beside the report)."""


# --------------------------------------------------------------------------- sections


def _header(db: Store, run: dict, dataset: dict, epochs: dict[str, dict]) -> list[str]:
    splits = split_sizes(db, dataset["dataset_id"])
    variables = variable_summary(db, dataset["dataset_id"])
    settings = pl.DataFrame(_flatten(run["config"]), schema=["setting", "value"], orient="row")
    return [
        f"# mini report: run {run['run_id']} on '{dataset['name']}'", "",
        f"Run status **{run['status']}**, device {run['device']}, started {run['started_at']:%Y-%m-%d %H:%M}, "
        f"{number_text(run['seconds'])} s of training, {run['examples_seen']:,} examples seen.", "",
        "## Dataset", "",
        f"'{dataset['name']}' ({dataset['kind']}, values: {dataset.get('value_type')}) from `{dataset['source']}`: "
        f"{dataset['n_examples']:,} examples × {dataset['n_units']} units, {dataset['n_trials']:,} trials "
        f"({dataset['trial_source']}), bins of {number_text(dataset['bin_size_s'])} s. Splits are by whole trials "
        f"(seed {dataset['split_seed']}); the test split informs no training, threshold or hyperparameter.", "",
        *markdown_table(splits), "", *_epochs(epochs), "Natural features:", "",
        *markdown_table(variables), "", "## SAE settings", "", *_transcoder(db, run), *markdown_table(settings), "",
    ]


def _transcoder(db: Store, run: dict) -> list[str]:
    """What a transcoder run read and reconstructed (nothing for a plain SAE)."""
    units = run_units(db, run["run_id"])
    if not units:
        return []
    config = run["config"]
    history = config.get("history", 1)
    context = (f" Temporal context: the input of a bin is its last {history} bins of the same trial (the first "
               f"{history - 1} bins of each trial are not trained on or scored; their missing lags are set to the "
               "units' train means when they are encoded).") if history > 1 else ""
    roles = roles_text(len(units["input"]), config.get("inputs"), len(units["target"]), config.get("targets"))
    return [f"Transcoder: {roles}. The code is computed from the inputs "
            "and reconstructs the targets: decoder rows, signatures and QC are over the targets, and QC's baseline is "
            f"a ridge regression from inputs to targets (fitted on train, its penalty chosen on val).{context}", ""]


def _epochs(epochs: dict[str, dict]) -> list[str]:
    """Which bins training, ranking and validation read (`store.epochs.run_epochs`: --where / --around)."""
    if not epochs:
        return ["Every step read every bin of its splits (no analysis epoch).", ""]
    lines = ["Analysis epochs (the bins each step read; splits as imported):", ""]
    for step, verb in STEP_VERBS.items():
        row = epochs.get(step)
        what = Epoch(row["where_sql"], row["around"]).describe() if row else "all bins"
        sizes = " (" + ", ".join(f"{s} {row['n_' + s]:,}" for s in read_splits(step)) + " bins)" if row else ""
        lines.append(f"- {verb} {'`' + what + '`' if row else what}{sizes}")
    return [*lines, ""]


def _flatten(config: dict, prefix: str = "") -> list[tuple[str, str]]:
    """Nested settings as ('sae.architecture', 'batchtopk') rows; empty lists and None left out."""
    rows = []
    for key, value in config.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        elif value not in (None, []):
            rows.append((f"{prefix}{key}", ", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return rows


def _quality(frames: dict[str, pl.DataFrame]) -> list[str]:
    saes = frames["saes"].select("sae_id", "instance", "architecture", "d_in", "d_sae", "k", "seed", "loss",
                                 "best_epoch", "val_loss")
    qc = frames["qc"].select("sae_id", "split", "n_examples", "fvu", "pca_fvu", "nmf_fvu", "baseline_components",
                             "ridge_fvu", "r2", "l0_mean", "dead_fraction", "n_bad_units")
    # A plain SAE has no ridge baseline; a transcoder across spaces has no PCA/NMF (they reconstruct a matrix from
    # itself, which says nothing about predicting one population from another).
    qc = qc.drop([c for c in ("pca_fvu", "nmf_fvu", "baseline_components", "ridge_fvu") if qc[c].is_null().all()])
    return ["### SAEs", "", *markdown_table(saes), "",
            "## Quality", "",
            "FVU is the fraction of variance unexplained (lower is better); PCA and NMF use as many components "
            "as the SAE's mean L0, fitted on train (a transcoder's baseline is ridge, from its inputs to its "
            "targets). Bad units are reconstructed with R² ≤ 0.1.", "",
            *markdown_table(qc), ""]


def _flags(frames: dict[str, pl.DataFrame], dataset: dict) -> list[str]:
    """The dataset's flags from import, then each SAE's, one line each with what to try next."""
    flags = frames["quality_flags"]
    lines = ["## Quality flags", "",
             "Each flag is a check against a stated threshold (docs/schema.md, quality_flags) with what to try "
             "next: the dataset's were found at import (on its train split), each SAE's after training, from its "
             "QC on train, val and test. Flags only report; the test split sets no setting. The quality_flags "
             "table beside this report holds each flag's value and threshold.", ""]

    def listed(title: str, rows: list[dict]) -> list[str]:
        if not rows:
            return [f"{title}: none.", ""]
        return [f"{title}:", "", *(f"- `{r['flag']}`: {flag_line(r, with_sae=False)}" for r in rows), ""]

    rows = flags.to_dicts()
    lines += listed(f"Dataset '{dataset['name']}' (at import)", [r for r in rows if r["run_id"] is None])
    for sae_id in frames["saes"]["sae_id"].to_list():
        lines += listed(f"SAE {sae_id}", [r for r in rows if r["sae_id"] == sae_id and r["run_id"] is not None])
    return lines


def _ranked(frames: dict[str, pl.DataFrame], top: int) -> list[str]:
    lines = ["## Ranked features", "",
             "Score = mean of the association (the selectivity index of the first suggestion), MIS and stability scores, "
             "each in [0, 1], from train + val only. Suggestions are significant at q < 0.05 in one false-discovery family "
             "per SAE (Benjamini–Hochberg within each variable or pair of variables at 5 % divided by their number). The "
             "full ranking of every feature is in the rankings table beside this report.", ""]
    for (sae_id,), part in frames["rankings"].group_by("sae_id", maintain_order=True):
        lines += [f"### SAE {sae_id}: top {min(top, part.height)} of {part.height}", "",
                  *markdown_table(part.head(top).drop("sae_id")), "", *_lags(frames, sae_id, part.head(top))]
    return lines


def _lags(frames: dict[str, pl.DataFrame], sae_id: int, top: pl.DataFrame) -> list[str]:
    """A run with temporal context: where in time each top feature reads its inputs (lag 0 is the bin itself)."""
    if "encoder_lags" not in frames:
        return []
    mine = frames["encoder_lags"].filter(pl.col("sae_id") == sae_id)
    cells = mine.with_columns(cell=pl.format("{} ({})", pl.col("share").round(2), pl.col("top_unit")),
                              lag=pl.format("lag {}", pl.col("lag")))
    table = top.select("rank", "feature_id").join(
        cells.pivot(on="lag", index="feature_id", values="cell"), on="feature_id", how="left").sort("rank")
    history = mine["lag"].max() + 1 if mine.height else 1
    return ["Each top feature's encoder weight per lag, as a share of its norm over the lags (lag j is the bin j bins "
            "earlier in the same trial), with the input unit that weighs most at that lag. The encoder starts as "
            f"random rows, so a share near 1/{history} = {1 / history:.2f} at every lag is no preference:", "",
            *markdown_table(table), ""]


def _labels(frames: dict[str, pl.DataFrame]) -> list[str]:
    current = frames["current_labels"]
    summary = current.group_by("sae_id").agg(
        labelled=pl.len(), accepted=(pl.col("verdict") == "accept").sum(),
        testable=(pl.col("verdict") == "accept").and_(pl.col("predicate").is_not_null()).sum(),
        generalise=pl.col("generalises").fill_null(False).sum(),
        signature_specific=pl.col("signature_specific").fill_null(False).sum(),
        validated=pl.col("validated").fill_null(False).sum()).sort("sae_id")
    shown = current.select("sae_id", "feature_id", "verdict", "name", "predicate", "source", "note", "attempt",
                           "generalises", "signature_specific")
    return ["## Labelled features", "",
            "Every feature's current label (the labels table beside this report keeps every action) with the "
            "verdicts of its latest validation attempt. Labels from `source = auto` were accepted automatically "
            "(e.g. by the demo), not by a person.", "",
            *markdown_table(shown), "", "### Summary", "",
            "Each label gets two verdicts on the test split. It **generalises** when the MCC's 95 % confidence "
            "interval (bootstrap over whole test trials) lies above 0 and the co-occurrence q-value (circular "
            "shifts within test trials, Benjamini–Hochberg over every attempt of the run) is below 0.05. Its "
            "signature is **specific** when decoding the predicate from the signature units beats the 95th "
            "percentile of random unit subsets of the same size (each tuned on random subsets of that size). "
            "A label is **validated** when both hold; in dense codes (every unit tuned) a label can generalise "
            "while random units decode it as well. A third figure, **necessity**, leaves both verdicts as they "
            "are: zeroing the feature's code (and, separately, its signature units in the input) drops the "
            "balanced accuracy of reading the predicate from the SAE's reconstruction on test by more than the "
            "95th percentile of the drops of random features of the nearest train density (random unit subsets "
            "of the signature's size).", "",
            *markdown_table(summary), ""]


def _top_tunings(frames: dict[str, pl.DataFrame], tunings: FeatureTunings, top: int) -> list[str]:
    if top <= 0:
        return []
    lines = ["## Tuning of the top features", "",
             f"For the top {top} features of each SAE: the tuning curve split by the categorical variable that "
             "separates it best (or the one its conjunctive suggestion names), and the histogram around each "
             "event of the dataset.", ""]
    for (sae_id,), part in frames["rankings"].group_by("sae_id", maintain_order=True):
        for row in part.head(top).iter_rows(named=True):
            lines += [f"### SAE {sae_id} · rank {row['rank']} · feature {row['feature_id']}: "
                      f"{row['suggestion'] or 'no suggestion'}", "", *(tunings.lines(sae_id, row["feature_id"])
                                                                      or ["(no split or event to show)", ""])]
    return lines


# --------------------------------------------------------------------------- entry point


def write_report(db: Store, run_id: int, out: str | Path, config: ReportConfig | None = None, *,
                 make_folder: bool = False) -> ReportOutcome:
    """Write the report to ``out`` and the run's tables to ``<out stem>_tables/`` beside it.

    ``make_folder``: create ``out``'s folder (and its parents) when the report is written, as for the default
    export folder (engine.exports); else a missing folder is refused before anything is read."""
    config = config or ReportConfig()
    if config.table_format not in TABLE_FORMATS:
        raise InputError(f"--tables must be one of {', '.join(TABLE_FORMATS)}, not '{config.table_format}'")
    if not str(out).strip():
        raise InputError("--out '': an empty path; give the report's file name, e.g. report.md")
    out = Path(out)
    if out.exists() and out.is_dir():
        raise InputError(f"{out}: is a folder; give the report's file name, e.g. {out / 'report.md'}")
    if not out.parent.exists() and not make_folder:
        raise InputError(f"{out.parent}: no such folder for the report")
    tables = out.with_name(f"{out.stem}_tables")
    if tables.exists() and not tables.is_dir():
        raise InputError(f"{tables}: is a file, and the report's tables go in a folder of that name; move it or "
                         "choose another --out")
    run = get_run(db, run_id)
    dataset = run_dataset(db, run_id)
    kinds = dict(load_natural_variables(db, dataset["dataset_id"]).select("variable", "kind").iter_rows())
    frames = report_tables(db, run_id)
    epochs = run_epochs(db, run_id)
    ranked = ranked_rows(db, dataset, run_id)
    tunings = FeatureTunings(db, run_id)
    lines = [*_header(db, run, dataset, epochs), *_quality(frames), *_flags(frames, dataset), *_ranked(frames, config.top),
             *_top_tunings(frames, tunings, config.tuning_top), *_labels(frames)]
    validations = frames["validations"]
    lines += validations_section(db, run_id, dataset, kinds, frames, ranked, tunings)

    folder = out.with_name(f"{out.stem}_tables")
    folder.mkdir(parents=make_folder, exist_ok=True)
    written = []
    for name, frame in frames.items():
        path = folder / f"{name}.{config.table_format}"
        tmp = path.with_name(f".{path.name}.tmp")
        if config.table_format == "csv":
            frame.with_columns(pl.selectors.temporal().cast(pl.String)).write_csv(tmp)
        else:
            frame.write_parquet(tmp)
        os.replace(tmp, path)
        written.append(path)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return ReportOutcome(out, written, frames["current_labels"].height, validations.height)
