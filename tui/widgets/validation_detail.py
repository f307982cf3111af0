"""How one labelled pairing's validation reads on screen: its row in the list and its detail panel.

Only stored numbers are shown (nothing is recomputed), each with what it is: the MCC and balanced
accuracy carry their 95 % trial-bootstrap intervals; the other confusion metrics are point values and
say so; labels without a predicate are 'not testable', and labels accepted automatically say that no
person accepted them.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from engine.report import bar

BAR_WIDTH = 20
LABEL_WIDTH = 18
"""Characters of a label shown in the list (the detail panel shows all of it)."""


def number(value: Any, digits: int = 3) -> str:
    """A stored number for reading: '–' when missing or NaN, else `digits` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def p_value_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.2g}" if value < 0.01 else f"{value:.3f}".rstrip("0").rstrip(".")


def label_text(row: dict) -> str:
    """The label as a person reads it: the predicate, and the name too when it says something else."""
    name, predicate = row.get("name"), row.get("predicate")
    if predicate and name and name != predicate:
        return f"{name} ({predicate})"
    return predicate or name or "(unnamed)"


def state(row: dict) -> str:
    """pending (accepted since the last validation), untestable, validated or failed."""
    if row.get("validated_at") is None:
        return "pending"
    if not row.get("testable"):
        return "untestable"
    return "validated" if row.get("validated") else "failed"


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def pairing_cells(row: dict, label_width: int = LABEL_WIDTH) -> list[Text]:
    """One row of the pairings list: SAE·feature, label, MCC [CI], q, decoding, verdict and who labelled.

    Narrow on purpose: the list and all its columns fit an 80-column terminal."""
    kind = state(row)
    cells = [Text(f"{row['sae_id']}·{row['feature_id']}", justify="right"),
             Text(_short(label_text(row), label_width))]
    if kind == "pending":
        cells += [Text("not validated yet", style="italic"), Text(""), Text(""), Text("new", style="bold yellow")]
    elif kind == "untestable":
        cells += [Text("not testable", style="dim italic"), Text(""), Text(""), Text("–", style="dim")]
    else:
        cells += [
            Text(f"{number(row['mcc'], 2)} [{number(row['mcc_ci_low'], 2)}, {number(row['mcc_ci_high'], 2)}]"),
            Text(p_value_text(row["q_value"]), justify="right"),
            Text(f"{number(row['decode_signature'], 2)}/{number(row['decode_all'], 2)}/"
                 f"{number(row['decode_random_p95'], 2)}"),
            Text("✓", style="bold green") if kind == "validated" else Text("✗", style="bold red"),
        ]
    if row.get("source") == "auto":
        cells[-1].append(" auto", style="yellow")
    return cells


PAIRING_COLUMNS = ("SAE·ft", "label", "MCC [95% CI]", "q", "sig/all/p95", "ok")


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
        ("random p95", row.get("decode_random_p95"), f"random {n_units}-unit subsets"),
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


def _metrics(text: Text, row: dict) -> None:
    _heading(text, "Feature on vs predicate true (test split)")
    tp, fp, fn, tn = (row.get(key) for key in ("tp", "fp", "fn", "tn"))
    text.append(f"  {'':<13}{'holds':>9}{'does not':>10}\n", style="bold")
    text.append(f"  {'feature on':<13}{number(tp):>9}{number(fp):>10}\n")
    text.append(f"  {'feature off':<13}{number(fn):>9}{number(tn):>10}\n")
    text.append(f"\n  {'metric':<19}{'test':>6}   95% CI (bootstrap over test trials)\n", style="bold")
    for name, key in (("MCC", "mcc"), ("balanced accuracy", "balanced_accuracy")):
        text.append(f"  {name:<19}{number(row.get(key)):>6}   "
                    f"[{number(row.get(key + '_ci_low'))}, {number(row.get(key + '_ci_high'))}]\n")
    for name, key in (("F1", "f1"), ("precision", "precision"), ("recall", "recall"),
                      ("specificity", "specificity")):
        text.append(f"  {name:<19}{number(row.get(key)):>6}   –\n")
    text.append("  (F1, precision, recall, specificity: point values, no CI stored)\n", style="dim")
    text.append(f"  p = {p_value_text(row.get('p_value'))}", style="bold")
    text.append("  activation shifted within test trials\n", style="dim")
    text.append(f"  q = {p_value_text(row.get('q_value'))}", style="bold")
    text.append("  Benjamini–Hochberg over the run's labels\n", style="dim")


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


def pairing_detail(row: dict, units: list[dict]) -> Text:
    """Everything stored about one pairing's validation, for the detail panel."""
    text = Text()
    text.append(f"SAE {row['sae_id']} · feature {row['feature_id']}", style="bold")
    if row.get("rank") is not None:
        text.append(f" · rank {row['rank']}", style="dim")
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
        text.append("\nNot testable: this label has no predicate, so there is nothing to test on the test "
                    "split. Give it one in Review (l) to test it.\n", style="bold")
        return text
    reason = str(row.get("reason") or "")
    if kind == "validated":
        text.append("\n✓ validated", style="bold green")
    else:
        text.append("\n✗ not validated", style="bold red")
    text.append(f" — {reason.split(': ', 1)[-1]}\n")
    text.append(f"Feature on when its activation exceeds {number(row.get('threshold'))} "
                "(chosen on train + val to maximise MCC).\n", style="dim")
    _metrics(text, row)
    _decoding_bars(text, row)
    _signature(text, row, units)
    text.rstrip()
    return text
