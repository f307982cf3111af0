"""The Validation screen's text (tui/screens/validation.py): the run summary above the list and the sentences
of its notifications."""

from __future__ import annotations

import polars as pl
from rich.text import Text
from textual.message import Message

from tui.validation_messages import ValidationFinished
from tui.widgets.validation_detail import TESTED, state

RULE = "gen: MCC 95% CI > 0, q < 0.05 · spec: signature > random p95 · test split only"
LOADING_TEXT = "Reading validations…"


def summary_text(run_id: int, dataset: str, saes: list[int], pairings: pl.DataFrame,
                 epoch: str | None = None) -> Text:
    """The run summary: labels, tested, and both verdicts (generalise; also signature-specific) per SAE,
    what is waiting, the analysis epoch the stored validations read (None: every bin), and the rule."""
    rows = list(pairings.iter_rows(named=True))
    states = [state(row) for row in rows]
    text = Text()
    text.append(f"Run {run_id} on '{dataset}'", style="bold")
    text.append(f" · {len(rows)} accepted labels, {sum(s in TESTED for s in states)} tested: "
                f"{_verdict_counts(states, lone=False)}")
    text.append(f" · epoch: {epoch}\n" if epoch else "\n")
    parts = []
    for sae_id in saes:
        mine = [(row, s) for row, s in zip(rows, states, strict=True) if row["sae_id"] == sae_id]
        if not mine:
            parts.append(f"SAE {sae_id}: no labels")
            continue
        # Testable: has a predicate to test (whether or not it has been validated yet).
        testable = sum(row["predicate"] is not None for row, _ in mine)
        parts.append(f"SAE {sae_id}: {len(mine)} label{'s' if len(mine) != 1 else ''}, {testable} testable, "
                     f"{_verdict_counts([s for _, s in mine])}")
    text.append(" · ".join(parts) + "\n")
    pending = states.count("pending")
    if pending:
        text.append(f"{pending} accepted label{'s' if pending != 1 else ''} not validated yet: press r\n",
                    style="bold yellow")
    text.append(RULE, style="dim")
    return text


def _verdict_counts(states: list[str], lone: bool = True) -> str:
    """`4 gen, 1 gen+spec`: both verdicts counted in the rule's words (with `lone`, specific-only labels
    said apart), short enough that an SAE's counts stay on one line at 80 columns."""
    general = sum(s in ("validated", "generalises") for s in states)
    text = f"{general} gen, {states.count('validated')} gen+spec"
    if lone and states.count("specific"):
        text += f", {states.count('specific')} spec only"
    return text


def sentence(text: str) -> str:
    """An engine message (lower case, one line) as a notification's sentence."""
    return text[:1].upper() + text[1:]


def outcome_text(message: Message) -> str:
    if isinstance(message, ValidationFinished):
        from engine.validation.validation_summary import outcome_line

        outcome = message.outcome
        return f"Run {outcome.run_id} on the test split: {outcome_line(message.counts, outcome.n_family)}."
    return getattr(message, "reason", "")
