"""The validation section of a run's report (engine.validation.report): each label's latest attempt with its
verdicts, figures, decoding, signature and tuning, then every attempt of the run."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from engine.analysis.predicates import parse_predicate
from engine.analysis.tuning import peri_event_lines, split_tuning_lines
from engine.validation.freezes import report_paragraph
from engine.validation.report_text import bar_chart, markdown_table, number_text
from engine.validation.validation_summary import (
    counts_line,
    duplicate_text,
    figures_frame,
    interval_text,
    verdict_counts,
)
from engine.validation.validation_text import necessity_text, p_text, q_text, trials_text, verdict_words
from store import Store
from store.report import feature_level_means, feature_tuning_curve


def _tuning(db: Store, dataset_id: int, sae_id: int, feature_id: int, variable: str, kind: str,
            ranked: np.ndarray | None = None) -> list[tuple[str, float, str]]:
    """The feature's mean activation per level or bin of the variable on train + val (what ranking saw:
    `ranked`, the example ids of the ranking's epoch, or every train + val bin when None)."""
    if kind in ("continuous", "circular"):
        curve = feature_tuning_curve(db, sae_id, feature_id, variable)
        return [(f"[{r['low']:.3g}, {r['high']:.3g})", r["mean"],
                 f"{number_text(r['mean'])} ± {number_text(r['sem'])}") for r in curve.iter_rows(named=True)]
    levels = feature_level_means(db, dataset_id, sae_id, feature_id, variable, ranked)
    return [(str(r["level"]), r["mean"], f"{number_text(r['mean'])}  (n {r['n']:,})")
            for r in levels.iter_rows(named=True)]


class FeatureTunings:
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


def _validation(db: Store, dataset: dict, kinds: dict[str, str], row: dict, label: dict,
                signature: pl.DataFrame, ranked: np.ndarray | None, tunings: FeatureTunings,
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
    decoding = [("signature units", row["decode_signature"], f"{number_text(row['decode_signature'])}"
                 f" ({n_units} units, {number_text(row['signature_percentile'])}th percentile of random)"),
                ("all units", row["decode_all"], number_text(row["decode_all"])),
                ("random p95", row["decode_random_p95"], f"{number_text(row['decode_random_p95'])}"
                 f" (random {n_units}-unit subsets, tuned on random subsets of this size)"),
                ("feature alone", row["decode_feature"], number_text(row["decode_feature"]))]
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
        f"{'' if row.get('reconstruction_decode') is None else '; the whole reconstruction decodes ' + number_text(row['reconstruction_decode'])}"
        ".", "",
        f"{str(row['reason'])[:1].upper() + str(row['reason'])[1:]}.", "",
        f"MCC {interval_text(row, 3)} over {trials}. "
        f"p {p if p[:1] in '<≤' else '= ' + p}{f' ({shifts} draws of the ranking null)' if shifts else ''}, "
        f"q {q if q[:1] in '<≤' else '= ' + q} (Benjamini–Hochberg over every attempt of the run).", "",
        f"Label: {'accepted automatically (not a person)' if label['source'] == 'auto' else 'by a person'}"
        f"{'; note: ' + label['note'] if label['note'] else ''}. Feature on when its activation "
        f"exceeds {number_text(row['threshold'])} (chosen on train + val to maximise MCC).", "",
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


def validations_section(db: Store, run_id: int, dataset: dict, kinds: dict[str, str], frames: dict[str, pl.DataFrame],
                 ranked: np.ndarray | None, tunings: FeatureTunings) -> list[str]:
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
