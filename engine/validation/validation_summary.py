"""A run's validations counted and tabulated, the same in `mini validate`, the Validation screen and the report.

Every label gets two verdicts (engine/validation/validation_text.py says them in words): it *generalises* (its MCC
interval on the test split lies above 0 and q < 0.05) and its signature is *specific* (the signature units
decode the predicate better than the random subsets' 95th percentile). In dense codes the first often holds
without the second, so the two are counted side by side and `validated` (both) is never the only number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import polars as pl

from engine.epochs import Epoch
from engine.validation.validation_text import MIN_CI_TRIALS, necessity_cell, p_text, q_text, trials_text

MARKS = {True: "✓", False: "✗", None: "–"}
"""A verdict as one character: held, did not hold, not tested (not testable, or no verdict stored)."""


class VerdictCounts(NamedTuple):
    n_labels: int
    """Labels counted (each label's latest attempt)."""
    n_testable: int
    """Of them, testable ones (a predicate whose figures could be computed on test)."""
    n_generalise: int
    """Testable labels that generalise (MCC interval above 0, q < 0.05)."""
    n_specific: int
    """Testable labels whose signature decodes above the random subsets' 95th percentile."""
    n_validated: int
    """Testable labels with both verdicts (they generalise and their signature is specific)."""
    n_duplicates: int
    """Labels marked as a weaker repeat of another feature's label (duplicate_of)."""
    n_few_trials: int
    """Testable labels whose intervals rest on fewer than MIN_CI_TRIALS test trials."""


def verdict_counts(rows: Iterable[Mapping[str, Any]]) -> VerdictCounts:
    """Count stored validation rows (one per label: its latest attempt); a NULL verdict counts as not held."""
    rows = list(rows)
    testable = [r for r in rows if r.get("testable")]
    return VerdictCounts(
        len(rows), len(testable),
        sum(bool(r.get("generalises")) for r in testable),
        sum(bool(r.get("signature_specific")) for r in testable),
        sum(bool(r.get("generalises")) and bool(r.get("signature_specific")) for r in testable),
        sum(r.get("duplicate_of") is not None for r in rows),
        sum(r.get("n_test_trials") is not None and r["n_test_trials"] < MIN_CI_TRIALS for r in testable),
    )


def _plural(n: int, word: str, many: str | None = None) -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def counts_line(counts: VerdictCounts) -> str:
    """`6 of 8 labels generalise; 2 of them are also signature-specific`, with what else counts."""
    text = (f"{counts.n_generalise} of {_plural(counts.n_testable, 'testable label')} generalise"
            f"; {counts.n_validated} of them {'is' if counts.n_validated == 1 else 'are'} also signature-specific")
    lone = counts.n_specific - counts.n_validated
    if lone:
        text += f" ({lone} more signature-specific without generalising)"
    if counts.n_labels > counts.n_testable:
        text += f"; {counts.n_labels - counts.n_testable} not testable"
    if counts.n_duplicates:
        text += f"; {_plural(counts.n_duplicates, 'weaker duplicate')} of another feature's label"
    if counts.n_few_trials:
        text += f"; {counts.n_few_trials} with fewer than {MIN_CI_TRIALS} test trials behind the intervals"
    return text


def outcome_line(counts: Any, n_family: int | None = None) -> str:
    """What one validation call found: `8 labels, 8 testable: 6 generalise, 2 also signature-specific
    (validated), 1 weaker duplicate; 2 with too few test trials; q over 11 tests (every attempt of the run)`.

    `counts`: a VerdictCounts, or anything with its fields (engine.validation.validate_run.ValidateOutcome);
    `n_family`: the distinct tests Benjamini–Hochberg corrected over (None: not said)."""
    text = (f"{_plural(counts.n_labels, 'label')}, {counts.n_testable} testable: "
            f"{counts.n_generalise} generalise, {counts.n_validated} also signature-specific (validated)")
    lone = counts.n_specific - counts.n_validated
    if lone:
        text += f", {lone} signature-specific without generalising"
    if counts.n_duplicates:
        text += f", {_plural(counts.n_duplicates, 'weaker duplicate')}"
    if counts.n_few_trials:
        text += f"; {counts.n_few_trials} with too few test trials (under {MIN_CI_TRIALS})"
    if n_family:
        text += f"; q over {_plural(n_family, 'test')} (every attempt of the run)"
    return text


def interval_text(row: Mapping[str, Any], digits: int = 2) -> str:
    """`0.70 [0.55, 0.75]`: the test MCC with its bootstrap interval; `–` without one."""
    if row.get("mcc") is None:
        return "–"

    def number(value: Any) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    return f"{number(row['mcc'])} [{number(row.get('mcc_ci_low'))}, {number(row.get('mcc_ci_high'))}]"


def duplicate_text(row: Mapping[str, Any], labels: Mapping[int, Mapping[str, Any]]) -> str:
    """`weaker duplicate of SAE 1 feature 14 (MCC 0.80)` when the row repeats a stronger label of another
    feature (`labels`: label_id -> a row with sae_id, feature_id and, where validated, mcc); '' otherwise."""
    stronger_id = row.get("duplicate_of")
    if stronger_id is None:
        return ""
    stronger = labels.get(stronger_id)
    if stronger is None:
        return f"weaker duplicate of label {stronger_id}"
    mcc = stronger.get("mcc")
    return (f"weaker duplicate of SAE {stronger['sae_id']} feature {stronger['feature_id']}"
            + (f" (MCC {mcc:.2f})" if mcc is not None else ""))


def figures_frame(rows: Iterable[Mapping[str, Any]], labels: Mapping[int, Mapping[str, Any]], *,
                  attempts: bool = False) -> pl.DataFrame:
    """Validation rows as a table of text: label, attempt, MCC [CI], test trials, p, q, both verdicts, necessity and
    the duplicate remark (a failed or not-testable row reads as such). `attempts` adds the epoch each was
    scored on, when it was stored, whether it is its label's latest (the rows' `latest`) and whether it is
    in the q-value family (`in_family`: the latest row of its test, and testable), for a table of every
    attempt."""
    out = []
    for row in rows:
        testable = bool(row.get("testable"))
        cells = {"SAE": row["sae_id"], "feature": row["feature_id"],
                 "label": row.get("predicate") or row.get("name") or "(no predicate)",
                 "attempt": row.get("attempt")}
        if attempts:
            cells["epoch"] = Epoch(row.get("where_sql"), row.get("around")).describe()
            cells["stored"] = None if row.get("created_at") is None else f"{row['created_at']:%Y-%m-%d %H:%M}"
            cells["latest"] = "yes" if row.get("latest") else "no"
            cells["in family"] = "yes" if row.get("in_family") and testable else "no"
        cells |= {
            "MCC [95% CI]": interval_text(row) if testable else "not testable",
            "test trials": trials_text(row.get("n_test_trials")) if testable else "–",
            "p": p_text(row.get("p_value"), row.get("n_shifts")),
            "q": q_text(row.get("q_value"), row.get("p_value"), row.get("n_shifts")),
            "generalises": MARKS[bool(row.get("generalises"))] if testable else MARKS[None],
            "signature specific": MARKS[bool(row.get("signature_specific"))] if testable else MARKS[None],
            "necessary (drop, p)": necessity_cell(row),
            "remark": duplicate_text(row, labels) or ("" if testable else _untestable(row)),
        }
        out.append(cells)
    schema = {"SAE": pl.Int64, "feature": pl.Int64, "label": pl.String, "attempt": pl.Int64}
    if attempts:
        schema |= {"epoch": pl.String, "stored": pl.String, "latest": pl.String, "in family": pl.String}
    schema |= {name: pl.String for name in ("MCC [95% CI]", "test trials", "p", "q", "generalises",
                                             "signature specific", "necessary (drop, p)", "remark")}
    return pl.DataFrame(out, schema=schema)


def _untestable(row: Mapping[str, Any]) -> str:
    reason = str(row.get("reason") or "not testable")
    return reason.removeprefix("not testable: ")
