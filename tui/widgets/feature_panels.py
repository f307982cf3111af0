"""Rich renderables for Review's panels: the feature line, its label, suggestions, examples, units.

Pure functions of an `engine.analysis.review.FeaturePanel`, so the screen only decides where they go.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.text import Text

from engine.validation.validation_summary import MARKS, interval_text
from engine.validation.validation_text import MIN_CI_TRIALS, q_text, trials_text, verdict_words
from tui.predicate_text import readable, terms, wrap

if TYPE_CHECKING:
    from engine.analysis.review import FeaturePanel

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
    """The current label and who made it; a long one wraps (the range it tests is never cut)."""
    text = Text(overflow="fold")
    label = panel.label
    if label is None:
        text.append("no label yet", style="dim")
        text.append("  1-9 accept · l type · x reject · ? unsure · v validate", style="dim")
        return text
    mark, style = VERDICT_MARKS[label["verdict"]]
    text.append(f"{mark} {label['verdict']}", style=f"bold {style}")
    if label["name"]:
        text.append(f": {label['name']}")
    if label["predicate"] and label["predicate"] != label["name"]:
        text.append(f"  tests {readable(label['predicate'])}", style="dim")
    if label["source"] == "auto":
        text.append("  auto (not a person's)" if wide else "  (auto)", style="italic yellow")
    if label["note"]:
        text.append(f"  note: {label['note']}", style="italic")
    return text


def validation_text(panel: FeaturePanel, *, wide: bool = True) -> Text:
    """The current label's latest validation attempt: both verdicts, the attempt, MCC [CI] with the test
    trials behind it, and q (`generalises ✓ · signature not specific ✗ · attempt 2 · MCC …`); empty for
    other verdicts. Narrow, the verdicts read as marks before their names so that q still fits 80 columns."""
    label, validation = panel.label, panel.validation
    if label is None or label["verdict"] != "accept":
        return Text("")
    if not label["predicate"]:
        return Text("not testable (no predicate)", style="dim")
    if validation is None:
        return Text("not validated yet (v validates)", style="dim")
    attempt = f"attempt {validation['attempt']}" if validation.get("attempt") is not None else ""
    if not validation["testable"]:
        return Text(f"not testable: {str(validation['reason']).removeprefix('not testable: ')}"
                    + (f" · {attempt}" if attempt else ""), style="dim")
    text = Text()
    general, specific = verdict_words(validation)
    for held, words, short in ((bool(validation.get("generalises")), general, "generalises"),
                               (bool(validation.get("signature_specific")), specific, "specific")):
        style = "bold green" if held else "bold red"
        if text.plain:
            text.append(" · " if wide else " ")
        text.append(f"{words} {MARKS[held]}" if wide else f"{MARKS[held]} {short}", style=style)
    if attempt:
        text.append(f" · {attempt}", style="bold")
    trials = validation.get("n_test_trials")
    few = trials is not None and trials < MIN_CI_TRIALS
    q = q_text(validation.get("q_value"), validation.get("p_value"), validation.get("n_shifts"))
    text.append(f" · MCC {interval_text(validation)}")
    if wide:
        counted = trials_text(trials).replace(" (", ", ").rstrip(")") if few else trials_text(trials)
        text.append(f" ({counted})", style="bold yellow" if few else "")
        text.append(f" · q {q}")
    else:  # the trial count only when it is too small: the Validation screen shows every count
        text.append(f" q {q}")
        if few:
            text.append(f" {trials} trials!", style="bold yellow")
    if validation.get("duplicate_of") is not None:
        text.append(" · weaker duplicate", style="magenta")
    return text


def effect(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def table_text(headers: list[str], rows: list[list[str]], width: int, *, right: set[int], flexible: int,
               row_styles: list[str | None] | None = None, wrap_flexible: bool = False) -> Text:
    """A plain table as lines of text: columns one space apart, numbers right-aligned, and the `flexible`
    column (the one with names) narrowed so that every line fits in `width` cells: its cells are cut
    with …, or with `wrap_flexible` (predicates) wrapped onto lines of their own between terms."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    spare = width - (sum(widths) + len(widths) - 1)
    if spare < 0:
        widths[flexible] = max(4 if not wrap_flexible else 12, widths[flexible] + spare)

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                cell = cell[: widths[i] - 1] + "…"
            out.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return " ".join(out).rstrip()

    text = Text(no_wrap=True, overflow="crop")
    text.append(line(headers), style="dim")
    for i, row in enumerate(rows):
        style = (row_styles[i] if row_styles else None) or ""
        pieces = wrap(row[flexible], widths[flexible]) if wrap_flexible else [row[flexible]]
        for n, piece in enumerate(pieces):
            cells = row if n == 0 else ["" for _ in row]
            text.append("\n")
            text.append(line([*cells[:flexible], piece, *cells[flexible + 1:]]), style=style)
    return text


def context_title(context: str, panel_width: int) -> str:
    """What the activation panel's title says is beneath the bars: the predicate whole when the title
    has room, else the variable it tests (a title cannot wrap, and half a range reads as a different one)."""
    text = readable(context)
    room = max(0, panel_width - len("Activation · beneath: ") - 4)
    if len(text) <= room:
        return text
    first = terms(text)[0].split(" ")[0]
    return first if len(first) <= room or room == 0 else first[: room - 1] + "…"


def suggestions_text(panel: FeaturePanel, width: int, *, wide: bool) -> Text:
    if not panel.suggestions:
        return Text("no suggestions: nothing this feature does is tied to a natural variable\n"
                    "(l types a label of your own)", style="dim")
    headers = ["#", "suggestion", "SI", *(["p"] if wide else []), "q"]
    rows, styles = [], []
    for s in panel.suggestions:
        significant = s["q_value"] is not None and s["q_value"] < ALPHA
        row = [str(s["position"]), readable(s["predicate"]), effect(s["score"])]
        if wide:
            row.append(number(s["p_value"], 2))
        row.append(number(s["q_value"], 2) + ("" if significant else " ns"))
        rows.append(row)
        styles.append(None if significant else "dim")
    return table_text(headers, rows, width, right=set(range(2, len(headers))), flexible=1, row_styles=styles,
                      wrap_flexible=True)


def examples_text(panel: FeaturePanel, width: int, *, wide: bool) -> Text:
    frame = panel.top_examples
    if frame.is_empty():
        return Text("never active on train or val", style="dim")
    variables = frame.columns[5:] if wide else frame.columns[5:6]
    headers = ["ex", "time", "trial", "split", "act", *variables]
    rows = []
    for row in frame.iter_rows(named=True):
        time_s = "–" if row["time_s"] is None or not math.isfinite(row["time_s"]) else f"{row['time_s']:.1f}"
        rows.append([str(row["example"]), time_s, str(row["trial"]), row["split"], f"{row['activation']:.2f}",
                     *(_cell(row[v]) for v in variables)])
    return table_text(headers, rows, width, right={0, 1, 2, 4, *range(5, len(headers))},
                      flexible=len(headers) - 1)


def _cell(value: Any) -> str:
    return "–" if value is None else (number(value) if isinstance(value, float) else str(value))


def units_text(panel: FeaturePanel, width: int) -> Text:
    signature = panel.units_source == "signature"
    headers = ["unit", "weight", *(["coact z"] if signature else [])]
    rows = [[row["name"], f"{row['weight']:+.3f}", *([number(row["coactivation"], 2)] if signature else [])]
            for row in panel.units.iter_rows(named=True)]
    table = table_text(headers, rows, width, right={1, 2}, flexible=0)
    if panel.lags is None:
        return table
    from tui.widgets.lag_text import lags_text

    return Text("\n").join([lags_text(panel.lags, width), table])  # temporal context (--history) above the units


def units_title(panel: FeaturePanel) -> str:
    if panel.units_source == "signature" and panel.label:
        return f"Signature units · label {panel.label['label_id']}"
    return "Units (decoder; no signature yet)"
