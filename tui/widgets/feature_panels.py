"""Rich renderables for Review's panels: the feature line, its label, suggestions, examples, units.

Pure functions of an `engine.review.FeaturePanel`, so the screen only decides where they go.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from engine.review import FeaturePanel

ALPHA = 0.05
VERDICT_MARKS = {"accept": ("✓", "green"), "reject": ("✗", "red"), "unsure": ("?", "yellow")}


def number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float) and value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.0e}"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def percent(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 100:.2g}%" if value < 0.1 else f"{value * 100:.0f}%"


def feature_line(panel: FeaturePanel, *, wide: bool) -> Text:
    """`#43  rank 1/64  score 0.481 (assoc 0.287 MIS 0.7 stab 0.456)  density 7.5%`"""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"#{panel.feature_id}", style="bold")
    text.append(f"  rank {panel.rank}/{panel.n_ranked}" if panel.rank is not None else "  not ranked")
    ranking, feature = panel.ranking, panel.feature
    if ranking:
        text.append(f"  score {number(ranking['score'])}", style="bold")
        text.append(f" (assoc {number(ranking['association'])} MIS {number(ranking['mis'])}"
                    f" stab {number(ranking['stability'])})")
    text.append(f"  density {percent(feature['density'])}")
    if wide:
        text.append(f"  on in {panel.n_active_fit:,} train/val bins", style="dim")
    if ranking and ranking["reason"]:
        text.append(f"  {ranking['reason']}", style="yellow")
    return text


def label_line(panel: FeaturePanel, *, wide: bool) -> Text:
    """The current label and who made it."""
    text = Text(no_wrap=True, overflow="ellipsis")
    label = panel.label
    if label is None:
        text.append("no label yet", style="dim")
        text.append("  1-9 accept · l type · x reject · ? unsure", style="dim")
        return text
    mark, style = VERDICT_MARKS[label["verdict"]]
    text.append(f"{mark} {label['verdict']}", style=f"bold {style}")
    if label["name"]:
        text.append(f": {label['name']}")
    if label["predicate"] and label["predicate"] != label["name"]:
        text.append(f"  tests {label['predicate']}", style="dim")
    if label["source"] == "auto":
        text.append("  auto (not a person's)" if wide else "  (auto)", style="italic yellow")
    if label["note"]:
        text.append(f"  note: {label['note']}", style="italic")
    return text


def validation_text(panel: FeaturePanel) -> Text:
    """Whether the current label's validation held, with its numbers; empty for other verdicts."""
    label, validation = panel.label, panel.validation
    if label is None or label["verdict"] != "accept":
        return Text("")
    if not label["predicate"]:
        return Text("not testable (no predicate)", style="dim")
    if validation is None:
        return Text("not validated yet (v validates)", style="dim")
    if not validation["testable"]:
        return Text(f"not testable: {validation['reason']}", style="dim")
    held = validation["validated"]
    text = Text("validated ✓" if held else "not validated ✗", style="bold green" if held else "bold red")
    text.append(f" MCC {number(validation['mcc'], 2)} [{number(validation['mcc_ci_low'], 2)},"
                f" {number(validation['mcc_ci_high'], 2)}] q {number(validation['q_value'], 2)}"
                f" signature {number(validation['decode_signature'], 2)}"
                f" vs random p95 {number(validation['decode_random_p95'], 2)}")
    return text


def effect(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def suggestions_table(panel: FeaturePanel, *, wide: bool) -> Table | Text:
    if not panel.suggestions:
        return Text("no suggestions: nothing this feature does is tied to a natural variable\n"
                    "(l types a label of your own)", style="dim")
    table = Table(box=None, expand=True, show_header=True, header_style="dim", padding=(0, 1), pad_edge=False,
                  collapse_padding=True)
    table.add_column("#", width=1, no_wrap=True)
    table.add_column("suggestion", ratio=1, no_wrap=True, overflow="ellipsis")
    table.add_column("effect", justify="right", no_wrap=True)
    if wide:
        table.add_column("p", justify="right", no_wrap=True)
    table.add_column("q", justify="right", no_wrap=True)
    for s in panel.suggestions:
        significant = s["q_value"] is not None and s["q_value"] < ALPHA
        cells = [str(s["position"]), s["predicate"], effect(s["effect_size"])]
        if wide:
            cells.append(number(s["p_value"], 2))
        cells.append(number(s["q_value"], 2) + ("" if significant else " ns"))
        table.add_row(*cells, style=None if significant else "dim")
    return table


def examples_table(panel: FeaturePanel, *, wide: bool) -> Table | Text:
    frame = panel.top_examples
    if frame.is_empty():
        return Text("never active on train or val", style="dim")
    variables = frame.columns[5:] if wide else frame.columns[5:6]
    table = Table(box=None, expand=True, header_style="dim", padding=(0, 1), pad_edge=False,
                  collapse_padding=True)
    for header in ("ex", "time", "trial", "split", "act"):
        table.add_column(header, justify="left" if header == "split" else "right", no_wrap=True,
                         min_width=5 if header == "split" else None)
    for variable in variables:
        # Narrow panels: a short header, so Rich does not squeeze every column to fit a long name.
        table.add_column(variable if wide else variable[:6], no_wrap=True, overflow="ellipsis", justify="right")
    for row in frame.iter_rows(named=True):
        time_s = "–" if row["time_s"] is None or not math.isfinite(row["time_s"]) else f"{row['time_s']:.1f}"
        table.add_row(str(row["example"]), time_s, str(row["trial"]), row["split"], f"{row['activation']:.2f}",
                      *(_cell(row[v]) for v in variables))
    return table


def _cell(value: Any) -> str:
    return "–" if value is None else (number(value) if isinstance(value, float) else str(value))


def units_table(panel: FeaturePanel) -> Table:
    table = Table(box=None, expand=True, header_style="dim", padding=(0, 1), pad_edge=False,
                  collapse_padding=True)
    table.add_column("unit", no_wrap=True, overflow="ellipsis", ratio=1)
    table.add_column("weight", justify="right", no_wrap=True)
    signature = panel.units_source == "signature"
    if signature:
        table.add_column("coact z", justify="right", no_wrap=True)
    for row in panel.units.iter_rows(named=True):
        cells = [row["name"], f"{row['weight']:+.3f}"]
        if signature:
            cells.append(number(row["coactivation"], 2))
        table.add_row(*cells)
    return table


def units_title(panel: FeaturePanel) -> str:
    if panel.units_source == "signature" and panel.label:
        return f"Signature (label {panel.label['label_id']}: 80 % of decoder norm)"
    return "Units: largest decoder weights (no signature yet)"
