"""How one labelled pairing's validation reads on screen: its row in the list and its detail panel.

Only stored numbers are shown (nothing is recomputed), each with what it is: the two verdicts (generalises;
signature-specific) side by side, the attempt, the MCC and balanced accuracy with their 95 % trial-bootstrap
intervals and the number of test trials behind them (flagged when too few); the other confusion metrics
are point values and say so; p and q read as bounds at the null's floor (engine.validation.validation_text); labels
without a predicate are 'not testable', and labels accepted automatically say that no person accepted them.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from engine.validation.report_text import bar
from engine.validation.validation_summary import MARKS, duplicate_text, interval_text
from engine.validation.validation_text import (
    MIN_CI_TRIALS,
    necessity_text,
    p_text,
    q_text,
    trials_text,
    verdict_words,
)

BAR_WIDTH = 20
LABEL_WIDTH = 15
"""Characters of a label shown in the list (the detail panel shows all of it): what leaves the other
columns room in 80 terminal columns."""


def number(value: Any, digits: int = 3) -> str:
    """A stored number for reading: '–' when missing or NaN, else `digits` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def label_text(row: dict) -> str:
    """The label as a person reads it: the predicate, and the name too when it says something else."""
    name, predicate = row.get("name"), row.get("predicate")
    if predicate and name and name != predicate:
        return f"{name} ({predicate})"
    return predicate or name or "(unnamed)"


def state(row: dict) -> str:
    """pending (accepted since the last validation), untestable, validated (generalises and signature-specific),
    generalises (only), specific (only: the signature is specific but the label does not generalise) or failed."""
    if row.get("validated_at") is None:
        return "pending"
    if not row.get("testable"):
        return "untestable"
    general, specific = bool(row.get("generalises")), bool(row.get("signature_specific"))
    if general and specific:
        return "validated"
    return "generalises" if general else "specific" if specific else "failed"


TESTED = ("validated", "generalises", "specific", "failed")
"""States of a testable label with a stored attempt."""


def _mark(held: bool) -> Text:
    return Text(MARKS[held], style="bold green" if held else "bold red", justify="center")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def pairing_cells(row: dict, label_width: int = LABEL_WIDTH, labels: dict[int, dict] | None = None) -> list[Text]:
    """One row of the pairings list: SAE·feature, label, attempt, MCC [CI] (`!` when it rests on too few
    test trials), q, the two verdicts, and a note (`dup`: a weaker duplicate; `auto`: not a person's label).

    Narrow on purpose: the list and all its columns fit an 80-column terminal."""
    kind = state(row)
    cells = [Text(f"{row['sae_id']}·{row['feature_id']}", justify="right"),
             Text(_short(label_text(row), label_width))]
    if kind == "pending":
        cells += [Text(""), Text("not validated yet", style="italic"), Text(""), Text(""), Text(""),
                  Text("new", style="bold yellow")]
    elif kind == "untestable":
        cells += [Text(str(row.get("attempt") or ""), justify="right"), Text("not testable", style="dim italic"),
                  Text(""), Text("–", style="dim", justify="center"), Text("–", style="dim", justify="center"),
                  Text("")]
    else:
        interval = Text(interval_text(row))
        trials = row.get("n_test_trials")
        if trials is not None and trials < MIN_CI_TRIALS:
            interval.append("!", style="bold yellow")
        cells += [Text(str(row.get("attempt") or "–"), justify="right"), interval,
                  Text(q_text(row.get("q_value"), row.get("p_value"), row.get("n_shifts")), justify="right"),
                  _mark(bool(row.get("generalises"))), _mark(bool(row.get("signature_specific"))), Text("")]
    note = cells[-1]
    if row.get("duplicate_of") is not None and kind != "pending":
        note.append("dup", style="magenta")
    if row.get("source") == "auto":
        note.append(" auto" if note.plain else "auto", style="yellow")
    return cells


PAIRING_COLUMNS = ("SAE·ft", "label", "#", "MCC [95% CI]", "q", "gen", "spec", "note")
"""gen: generalises (MCC interval above 0, q < 0.05); spec: signature-specific; #: the attempt."""


# --------------------------------------------------------------------------- the detail panel


def _heading(text: Text, title: str) -> None:
    text.append(f"\n{title}\n", style="bold underline")


def _decoding_bars(text: Text, row: dict) -> None:
    metric = row.get("decode_metric") or "balanced_accuracy"
    # Balanced accuracy's chance level is 0.5: bars start there so that the gap between the signature
    # and the random subsets is visible; R² starts at 0.
    low = 0.5 if metric == "balanced_accuracy" else 0.0
    predicate = row.get("predicate")
    _heading(text, f"Decoding '{predicate}' on test")
    text.append(f"  {metric.replace('_', ' ')}; bars from {low:g} (chance) to 1\n" if low else
                f"  {metric.replace('_', ' ')}; bars from 0 to 1\n", style="dim")
    n_units = row.get("n_signature_units")
    bars = [
        (f"signature ({n_units} units)", row.get("decode_signature"),
         f"{number(row.get('signature_percentile'), 0)}th pct of random"),
        ("all units", row.get("decode_all"), ""),
        ("random p95", row.get("decode_random_p95"), f"{n_units}-unit subsets"),
        ("feature alone", row.get("decode_feature"), ""),
    ]
    width = max(len(name) for name, _, _ in bars)
    for name, value, note in bars:
        shown = None if value is None or (isinstance(value, float) and math.isnan(value)) else value - low
        style = "green" if name.startswith("signature") else "cyan"
        text.append(f"  {name:<{width}} ")
        text.append(f"{bar(shown, 1.0 - low, BAR_WIDTH):<{BAR_WIDTH}}", style=style)
        text.append(f" {number(value)}")
        if note:
            text.append(f"  {note}", style="dim")
        text.append("\n")
    text.append(f"  random p95: the 95th percentile of random {n_units}-unit subsets, each decoder\n"
                "  tuned on random subsets of this size (not on the signature)\n", style="dim")


def _is(name: str, value: str) -> str:
    """`p = 0.03`, or `p < 0.005` for a bound (the text already holds its relation)."""
    return f"{name} {value}" if value[:1] in "<≤" else f"{name} = {value}"


def _metrics(text: Text, row: dict) -> None:
    _heading(text, "Feature on vs predicate true (test split)")
    tp, fp, fn, tn = (row.get(key) for key in ("tp", "fp", "fn", "tn"))
    text.append(f"  {'':<13}{'holds':>9}{'does not':>10}\n", style="bold")
    text.append(f"  {'feature on':<13}{number(tp):>9}{number(fp):>10}\n")
    text.append(f"  {'feature off':<13}{number(fn):>9}{number(tn):>10}\n")
    trials = row.get("n_test_trials")
    few = trials is not None and trials < MIN_CI_TRIALS
    text.append(f"\n  {'metric':<19}{'test':>6}   95% CI (bootstrap over test trials)\n", style="bold")
    for name, key in (("MCC", "mcc"), ("balanced accuracy", "balanced_accuracy")):
        text.append(f"  {name:<19}{number(row.get(key)):>6}   "
                    f"[{number(row.get(key + '_ci_low'))}, {number(row.get(key + '_ci_high'))}]  ")
        text.append(trials_text(trials).split(" (")[0], style="bold yellow" if few else "dim")
        text.append("\n")
    if few:
        text.append(f"  {trials_text(trials)}: read these intervals as rough\n", style="bold yellow")
    for name, key in (("F1", "f1"), ("precision", "precision"), ("recall", "recall"),
                      ("specificity", "specificity")):
        text.append(f"  {name:<19}{number(row.get(key)):>6}   –\n")
    text.append("  (F1, precision, recall, specificity: point values, no CI stored)\n", style="dim")
    shifts = row.get("n_shifts")
    text.append(f"  {_is('p', p_text(row.get('p_value'), shifts))}", style="bold")
    text.append(f"  the ranking's null: shifts within test trials, or trial swaps{f' ({shifts} draws)' if shifts else ''}\n",
                style="dim")
    text.append(f"  {_is('q', q_text(row.get('q_value'), row.get('p_value'), shifts))}", style="bold")
    text.append("  Benjamini–Hochberg over every attempt of the run\n", style="dim")


def _signature(text: Text, row: dict, units: list[dict]) -> None:
    _heading(text, f"Neural signature: {len(units)} units")
    text.append("  the fewest units holding 80% of the decoder row's squared norm;\n"
                "  coactivation: mean z-scored count while the feature is on (train + val)\n", style="dim")
    if not units:
        text.append("  (no signature stored)\n", style="dim")
        return
    name_width = max(4, *(len(str(unit["unit_name"])) for unit in units))
    text.append(f"  {'unit':>5}  {'name':<{name_width}}  {'weight':>7}  {'coactivation':>12}\n", style="bold")
    for unit in units:
        coactivation = unit["coactivation"]
        text.append(f"  {unit['unit_id']:>5}  {unit['unit_name']!s:<{name_width}}  {unit['weight']:>+7.3f}  "
                    f"{'–' if coactivation is None else format(coactivation, '+.2f'):>12}\n")


def _verdicts(text: Text, row: dict, labels: dict[int, dict]) -> None:
    """The two verdicts side by side, with the figures each rests on (the stored reason says the same in one
    line: the report and `mini validate` show it)."""
    general, specific = verdict_words(row)
    held = bool(row.get("generalises"))
    text.append(f"\n{MARKS[held]} {general}", style="bold green" if held else "bold red")
    text.append(f" — MCC {interval_text(row)} over {trials_text(row.get('n_test_trials'))}, "
                f"{_is('q', q_text(row.get('q_value'), row.get('p_value'), row.get('n_shifts')))}\n")
    held = bool(row.get("signature_specific"))
    text.append(f"{MARKS[held]} {specific}", style="bold green" if held else "bold red")
    text.append(f" — signature {number(row.get('decode_signature'), 2)} vs random p95 "
                f"{number(row.get('decode_random_p95'), 2)}\n")
    if row.get("testable"):  # a third figure beside the verdicts, which it never changes
        held = bool(row.get("necessary"))
        text.append(f"{MARKS[held] if row.get('necessary') is not None else MARKS[None]} ",
                    style="bold green" if held else "bold red")
        text.append(f"{necessity_text(row)}\n  {necessity_text(row, signature=True)}\n")
    duplicate = duplicate_text(row, labels)
    if duplicate:
        text.append(f"≈ {duplicate}: the same predicate, tested on a stronger feature\n", style="magenta")


def pairing_detail(row: dict, units: list[dict], labels: dict[int, dict] | None = None) -> Text:
    """Everything stored about one pairing's validation, for the detail panel (`labels`: the run's pairings
    by label_id, to name the stronger label a duplicate repeats)."""
    text = Text()
    text.append(f"SAE {row['sae_id']} · feature {row['feature_id']}", style="bold")
    if row.get("rank") is not None:
        text.append(f" · rank {row['rank']}", style="dim")
    if row.get("attempt") is not None and row.get("validated_at") is not None:
        text.append(f" · attempt {row['attempt']}", style="bold")
    text.append("\nlabel ", style="dim")
    text.append(label_text(row), style="bold")
    text.append("\n")
    if row.get("source") == "auto":
        text.append("auto: accepted automatically (top suggestion), not by a person\n", style="yellow")
    else:
        text.append(f"accepted by a {row.get('source') or 'person'}\n", style="dim")
    if row.get("note"):
        text.append(f"note: {row['note']}\n", style="italic")
    kind = state(row)
    if kind == "pending":
        text.append("\nNot validated yet: accepted since the last validation. Press r to validate.\n",
                    style="bold yellow")
        return text
    if kind == "untestable":
        reason = str(row.get("reason") or "").removeprefix("not testable: ")
        if not row.get("predicate"):
            reason = ("this label has no predicate, so there is nothing to test on the test split. Give it one "
                      "in Review (l) to test it")
        text.append(f"\nNot testable: {reason}.\n", style="bold")
        return text
    _verdicts(text, row, labels or {})
    text.append(f"Feature on when its activation exceeds {number(row.get('threshold'))} "
                "(chosen on train + val to maximise MCC).\n", style="dim")
    _metrics(text, row)
    _decoding_bars(text, row)
    _signature(text, row, units)
    text.rstrip()
    return text
