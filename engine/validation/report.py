"""A run's Markdown report, with its tables beside it as CSV or Parquet.

The report is what a scientist attaches to a lab notebook or a paper's supplement: the dataset and its
splits, the SAE settings, quality against PCA and NMF, the quality flags with what to try next, the
ranked and labelled features, and every validation with its numbers, its neural signature and a text
plot of the feature's tuning. Everything comes from the database; nothing is recomputed, so the report
shows exactly what is stored.

Files are written to temporary names and renamed at the end: an interrupted report leaves the previous
one intact.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.analysis.predicates import parse_predicate
from engine.analysis.tuning import peri_event_lines, ranked_rows, split_tuning_lines
from engine.epochs import STEP_VERBS, Epoch, read_splits
from engine.errors import InputError
from engine.options import check_integer
from engine.sae.unit_selection import roles_text
from engine.validation.freezes import report_paragraph
from engine.validation.validation_summary import (
    counts_line,
    duplicate_text,
    figures_frame,
    interval_text,
    verdict_counts,
)
from engine.validation.validation_text import necessity_text, p_text, q_text, trials_text, verdict_words
from store import Store
from store.datasets import load_natural_variables
from store.epochs import run_epochs
from store.quality import flag_line
from store.report import (
    feature_level_means,
    feature_tuning_curve,
    report_tables,
    split_sizes,
    variable_summary,
)
from store.review import run_dataset
from store.runs import get_run, run_units

TABLE_FORMATS = ("csv", "parquet")
BAR_WIDTH = 28
_EIGHTHS = " ▏▎▍▌▋▊▉"


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


# --------------------------------------------------------------------------- text rendering


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pl.DataFrame) -> list[str]:
    """A GitHub-flavoured Markdown table; numbers right-aligned, missing values as –."""
    if frame.is_empty():
        return ["(none)"]
    align = ["---:" if dtype.is_numeric() and dtype != pl.Boolean else "---" for dtype in frame.dtypes]
    lines = ["| " + " | ".join(frame.columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_number(v) for v in row) + " |" for row in frame.iter_rows()]
    return lines


def bar(value: float, top: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of value / top of the width, in eighths of a character."""
    if top <= 0 or value is None or not math.isfinite(value) or value <= 0:
        return ""
    eighths = round(min(value / top, 1.0) * width * 8)
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def bar_chart(rows: list[tuple[str, float, str]], marked: set[str] = frozenset()) -> list[str]:
    """Rows of (label, value, annotation) as bars in a fenced block; marked labels get a ◀."""
    finite = [v for _, v, _ in rows if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    width = max((len(label) for label, _, _ in rows), default=0)
    lines = ["```"]
    for label, value, note in rows:
        lines.append(f"{label.rjust(width)} │{bar(value, top).ljust(BAR_WIDTH)} {note}"
                     + ("  ◀" if label in marked else ""))
    return [*lines, "```"]


# --------------------------------------------------------------------------- gathering


def _tuning(db: Store, dataset_id: int, sae_id: int, feature_id: int, variable: str, kind: str,
            ranked: np.ndarray | None = None) -> list[tuple[str, float, str]]:
    """The feature's mean activation per level or bin of the variable on train + val (what ranking saw:
    `ranked`, the example ids of the ranking's epoch, or every train + val bin when None)."""
    if kind in ("continuous", "circular"):
        curve = feature_tuning_curve(db, sae_id, feature_id, variable)
        return [(f"[{r['low']:.3g}, {r['high']:.3g})", r["mean"],
                 f"{_number(r['mean'])} ± {_number(r['sem'])}") for r in curve.iter_rows(named=True)]
    levels = feature_level_means(db, dataset_id, sae_id, feature_id, variable, ranked)
    return [(str(r["level"]), r["mean"], f"{_number(r['mean'])}  (n {r['n']:,})")
            for r in levels.iter_rows(named=True)]


# --------------------------------------------------------------------------- sections


def _header(db: Store, run: dict, dataset: dict, epochs: dict[str, dict]) -> list[str]:
    splits = split_sizes(db, dataset["dataset_id"])
    variables = variable_summary(db, dataset["dataset_id"])
    settings = pl.DataFrame(_flatten(run["config"]), schema=["setting", "value"], orient="row")
    return [
        f"# mini report: run {run['run_id']} on '{dataset['name']}'", "",
        f"Run status **{run['status']}**, device {run['device']}, started {run['started_at']:%Y-%m-%d %H:%M}, "
        f"{_number(run['seconds'])} s of training, {run['examples_seen']:,} examples seen.", "",
        "## Dataset", "",
        f"'{dataset['name']}' ({dataset['kind']}, values: {dataset.get('value_type')}) from `{dataset['source']}`: "
        f"{dataset['n_examples']:,} examples × {dataset['n_units']} units, {dataset['n_trials']:,} trials "
        f"({dataset['trial_source']}), bins of {_number(dataset['bin_size_s'])} s. Splits are by whole trials "
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


class _Tunings:
    """Split tuning and peri-event histograms of a run's features, as text; each SAE's shared inputs read once."""

    def __init__(self, db: Store, run_id: int):
        self.db, self.run_id, self.contexts = db, run_id, {}

    def lines(self, sae_id: int, feature_id: int) -> list[str]:
        from engine.analysis.review import load_context, load_feature

        if sae_id not in self.contexts:
            self.contexts[sae_id] = load_context(self.db, self.run_id, sae_id)
        panel = load_feature(self.db, self.contexts[sae_id], feature_id)
        out = []
        if panel.splits:
            out += ["Split tuning (mean activation ± SEM per bin and level; train + val bins of the ranking's "
                    "epoch):", "", "```", *split_tuning_lines(panel.splits[0]), "```", ""]
        for peth in panel.peri_events:
            out += ["Peri-event histogram (mean over events of the activation in each bin ± SEM across events; "
                    "train + val):", "", "```", *peri_event_lines(peth), "```", ""]
        return out


def _top_tunings(frames: dict[str, pl.DataFrame], tunings: _Tunings, top: int) -> list[str]:
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


def _validation(db: Store, dataset: dict, kinds: dict[str, str], row: dict, label: dict,
                signature: pl.DataFrame, ranked: np.ndarray | None, tunings: _Tunings,
                labels: dict[int, dict]) -> list[str]:
    """One label's latest attempt: both verdicts, its figures, decoding, signature and tuning. A weaker
    duplicate gets a smaller heading, under its stronger label."""
    level = "####" if row.get("duplicate_of") is not None else "###"
    title = f"{level} SAE {row['sae_id']} · feature {row['feature_id']}: {row['predicate'] or label['name']}"
    attempt = f"attempt {row['attempt']}" if row.get("attempt") is not None else "attempt –"
    duplicate = duplicate_text(row, labels)
    remark = [f"↳ {duplicate[:1].upper() + duplicate[1:]}: the same predicate on another feature of the SAE.", ""]
    if not row["testable"]:
        return [title, "", f"Not testable ({attempt}): {str(row['reason']).removeprefix('not testable: ')}.", "",
                *(remark if duplicate else [])]
    general, specific = verdict_words(row)
    verdicts = (f"{'✅' if row.get('generalises') else '❌'} **{general}** · "
                f"{'✅' if row.get('signature_specific') else '❌'} **{specific}** · {attempt}")
    trials = trials_text(row.get("n_test_trials"))
    confusion = pl.DataFrame({"": ["feature on", "feature off"],
                              "predicate holds": [row["tp"], row["fn"]],
                              "predicate does not hold": [row["fp"], row["tn"]]})
    metrics = pl.DataFrame({
        "metric": ["MCC", "balanced accuracy", "F1", "precision", "recall", "specificity"],
        "test": [row["mcc"], row["balanced_accuracy"], row["f1"], row["precision"], row["recall"],
                 row["specificity"]],
        "95% CI low": [row["mcc_ci_low"], row["balanced_accuracy_ci_low"], None, None, None, None],
        "95% CI high": [row["mcc_ci_high"], row["balanced_accuracy_ci_high"], None, None, None, None],
        "test trials": [trials, trials, None, None, None, None],
    }, schema_overrides={"95% CI low": pl.Float64, "95% CI high": pl.Float64, "test trials": pl.String})
    n_units = row["n_signature_units"]
    decoding = [("signature units", row["decode_signature"], f"{_number(row['decode_signature'])}"
                 f" ({n_units} units, {_number(row['signature_percentile'])}th percentile of random)"),
                ("all units", row["decode_all"], _number(row["decode_all"])),
                ("random p95", row["decode_random_p95"], f"{_number(row['decode_random_p95'])}"
                 f" (random {n_units}-unit subsets, tuned on random subsets of this size)"),
                ("feature alone", row["decode_feature"], _number(row["decode_feature"]))]
    units = signature.filter(pl.col("in_signature")).select(
        "unit_id", "unit_name", "weight", "coactivation")
    # Tuning to the first clause's variable, marked by that clause (the whole predicate for one clause).
    clauses = parse_predicate(row["predicate"], kinds).clauses
    clause = clauses[0]
    variable = clause.variable
    tuning = _tuning(db, dataset["dataset_id"], row["sae_id"], row["feature_id"], variable, clause.kind, ranked)
    marked = {str(clause.value)} if clause.low is None else {
        lvl for lvl, _, _ in tuning if _in_range(lvl, clause.low, clause.high)}
    marking = "the labelled value or range" if len(clauses) == 1 else f"the first clause's {'range' if clause.low is not None else 'value'}"
    shifts = row.get("n_shifts")
    p = p_text(row["p_value"], shifts)
    q = q_text(row["q_value"], row["p_value"], shifts)
    return [
        title, "", verdicts, "", *(remark if duplicate else []),
        f"Necessity (causal ablation on test, a third figure that leaves both verdicts as they are): "
        f"{necessity_text(row)}; {necessity_text(row, signature=True)}"
        f"{'' if row.get('reconstruction_decode') is None else '; the whole reconstruction decodes ' + _number(row['reconstruction_decode'])}"
        ".", "",
        f"{str(row['reason'])[:1].upper() + str(row['reason'])[1:]}.", "",
        f"MCC {interval_text(row, 3)} over {trials}. "
        f"p {p if p[:1] in '<≤' else '= ' + p}{f' ({shifts} draws of the ranking null)' if shifts else ''}, "
        f"q {q if q[:1] in '<≤' else '= ' + q} (Benjamini–Hochberg over every attempt of the run).", "",
        f"Label: {'accepted automatically (not a person)' if label['source'] == 'auto' else 'by a person'}"
        f"{'; note: ' + label['note'] if label['note'] else ''}. Feature on when its activation "
        f"exceeds {_number(row['threshold'])} (chosen on train + val to maximise MCC).", "",
        *markdown_table(confusion), "", *markdown_table(metrics), "",
        f"Decoding `{row['predicate']}` on test ({row['decode_metric'].replace('_', ' ')}; fitted on train + val, "
        "regularisation by cross-validation grouped by trial):", "", *bar_chart(decoding), "",
        f"Neural signature: {units.height} units hold 80 % of the decoder row's squared norm; coactivation is "
        "each unit's mean z-scored count while the feature is on (train + val).", "",
        *markdown_table(units), "",
        f"Tuning to {variable} (mean activation on train + val; ◀ {marking}):", "",
        *bar_chart(tuning, marked), "", *tunings.lines(row["sae_id"], row["feature_id"]),
    ]


def _latest_attempts(validations: pl.DataFrame) -> pl.DataFrame:
    """Each label's latest attempt (what `current_validations` holds), duplicates right after the label
    they repeat, the rest by SAE and feature."""
    if validations.is_empty():
        return validations
    latest = validations.filter(pl.col("latest_of_label")).sort("sae_id", "feature_id", "label_id")
    rows = latest.to_dicts()
    present = {r["label_id"] for r in rows}
    under: dict[int, list[dict]] = {}
    for r in rows:
        if r.get("duplicate_of") in present:
            under.setdefault(r["duplicate_of"], []).append(r)
    ordered = []
    for r in rows:
        if r.get("duplicate_of") in present:
            continue
        ordered += [r, *under.get(r["label_id"], [])]
    return pl.DataFrame(ordered, schema=latest.schema)


def _attempts(validations: pl.DataFrame, labels: dict[int, dict]) -> list[str]:
    """Every attempt of the run, failed and superseded ones too: the q-value family they belong to."""
    if validations.is_empty():
        return []
    rows = [{**r, "latest": r["latest_of_label"]} for r in validations.iter_rows(named=True)]
    n_family = sum(bool(r["in_family"] and r["testable"]) for r in rows)
    n_tested = sum(bool(r["testable"]) for r in rows)
    family = (f"{_plural(n_family, 'attempt')} in the q-value family" if n_tested == n_family else
              f"{_plural(n_tested, 'tested attempt')}, {n_family} distinct tests in the q-value family (a test "
              "repeated on the same label and epoch counts once, at its latest attempt)")
    untested = len(rows) - n_tested
    return ["### Every attempt", "",
            f"{family}{f'; {untested} not testable' if untested else ''}. Attempts are never deleted: a label "
            "relabelled or tested again keeps its earlier attempts here, and they stay in the correction.", "",
            *markdown_table(figures_frame(rows, labels, attempts=True)), ""]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _validations(db: Store, run_id: int, dataset: dict, kinds: dict[str, str], frames: dict[str, pl.DataFrame],
                 ranked: np.ndarray | None, tunings: _Tunings) -> list[str]:
    """The validation section: the verdicts counted, each label's latest attempt (duplicates under the label
    they repeat), labels accepted since, and every attempt of the run."""
    lines = ["## Validations", "", report_paragraph(db, run_id), ""]
    validations = frames["validations"]
    if validations.is_empty():
        return [*lines, "No validation has been run yet: `mini validate --run " f"{run_id}`.", ""]
    labels = {r["label_id"]: r for r in frames["current_labels"].iter_rows(named=True)}
    every_label = {r["label_id"]: r for r in frames["labels"].iter_rows(named=True)}
    latest = _latest_attempts(validations)
    by_label = {r["label_id"]: {**every_label.get(r["label_id"], {}), **r} for r in latest.iter_rows(named=True)}
    current = [r for r in latest.iter_rows(named=True) if r["current"]]
    lines += [f"**{counts_line(verdict_counts(current))}** (each accepted label's latest attempt).", ""]
    for row in latest.iter_rows(named=True):
        signature = frames["signatures"].filter(pl.col("label_id") == row["label_id"])
        lines += _validation(db, dataset, kinds, row, every_label[row["label_id"]], signature, ranked, tunings,
                             by_label)
        if row["label_id"] not in labels:
            lines += ["(This label has since been replaced; validate again to test the current one.)", ""]
    validated_ids = set(validations["label_id"].to_list())
    unvalidated = [r for r in labels.values() if r["verdict"] == "accept" and r["label_id"] not in validated_ids]
    if unvalidated:
        lines += ["Accepted since the last validation (run `mini validate` to test them): "
                  + ", ".join(f"SAE {r['sae_id']} feature {r['feature_id']}" for r in unvalidated) + ".", ""]
    return [*lines, *_attempts(validations, by_label)]


def _in_range(level: str, low: float | None, high: float | None) -> bool:
    """Whether a tuning bin '[a, b)' lies inside the labelled range (wrapping when low > high)."""
    if low is None:
        return False
    a, b = (float(x) for x in level.strip("[)").split(","))
    mid, high = (a + b) / 2, math.inf if high is None else high
    return (low <= mid < high) if low <= high else (mid >= low or mid < high)


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
    tunings = _Tunings(db, run_id)
    lines = [*_header(db, run, dataset, epochs), *_quality(frames), *_flags(frames, dataset), *_ranked(frames, config.top),
             *_top_tunings(frames, tunings, config.tuning_top), *_labels(frames)]
    validations = frames["validations"]
    lines += _validations(db, run_id, dataset, kinds, frames, ranked, tunings)

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
