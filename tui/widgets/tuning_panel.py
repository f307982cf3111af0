"""Review's tuning panel: the tuning bars, the tuning split by a second variable, or a peri-event histogram.

`s` switches between the three views, `b` shows the split by the next variable, `e` the histogram around
the next event, `]` / `[` page through the rows. Every bin stays reachable however few rows the panel has
(7 at 80×24): the split and peri-event views start with one sparkline per curve holding every bin (adjacent
bins merged, with a note, where the panel is narrower than the bins), then a row per bin with its numbers;
the title says which bins are in view and that more lie below (`bins 1–2 of 20 ↓`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import numpy as np
from rich.text import Text

from engine.analysis.tuning import merge_columns, sparkline
from tui.widgets.text_panel import TextPanel
from tui.widgets.tuning_bars import render_tunings

if TYPE_CHECKING:
    from engine.analysis.review import FeaturePanel
    from engine.analysis.tuning import PeriEvent, SplitTuning

VIEWS = ("tuning", "split", "peri")
TITLES = {"tuning": "Tuning", "split": "Split", "peri": "Peri-event"}
FULL_TITLES = {"tuning": "Tuning (train + val) · s: split", "split": "Split tuning (train + val) · b, s",
               "peri": "Peri-event (train + val) · e, s"}
LineBins = list[tuple[str, int, int] | None]
"""Per line: (what the bins are of, bin number from 1, bins in all), None for other lines."""
Item = TypeVar("Item")


def _cell(mean: float, sem: float, with_sem: bool) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f}" + (f"±{sem:.2f}" if with_sem and np.isfinite(sem) else "")


def _table(text: Text, lines: LineBins, what: str, labels: list[str], columns: list[str], means: np.ndarray,
           sem: np.ndarray, width: int) -> None:
    """A row per bin: its label, then mean (± SEM where it fits) per column; means is [columns × bins]."""
    label_width = max(len(label) for label in labels)
    for with_sem in (True, False):
        cells = [[_cell(means[c, b], sem[c, b], with_sem) for c in range(len(columns))] for b in range(len(labels))]
        widths = [max(len(columns[c]), *(len(row[c]) for row in cells)) for c in range(len(columns))]
        if label_width + sum(w + 1 for w in widths) <= width:
            break
    # Still too wide (many levels on a narrow panel): the bin labels give way, the numbers stay whole.
    label_width = max(6, min(label_width, width - sum(w + 1 for w in widths)))
    labels = [label if len(label) <= label_width else label[: label_width - 1] + "…" for label in labels]
    text.append("\n" + " " * label_width + "".join(f" {name[:w]:>{w}}" for name, w in zip(columns, widths,
                                                                                                strict=True)),
                style="dim")
    lines.append(None)
    for b, label in enumerate(labels):
        text.append(f"\n{label:<{label_width}}" + "".join(f" {cell:>{w}}" for cell, w in zip(cells[b], widths,
                                                                                               strict=True)))
        lines.append((what, b + 1, len(labels)))


def _sparks(text: Text, lines: LineBins, names: list[str], means: np.ndarray, n: np.ndarray, width: int,
            axis: tuple[str, str]) -> None:
    """One sparkline per curve on a shared scale, every bin in it (merged where narrower than the bins)."""
    name_width = min(max(len(name) for name in names), 12)
    room = max(4, width - name_width - 8)
    merged, per = merge_columns(means, n, room)
    top = float(np.nanmax(merged)) if np.isfinite(merged).any() else 0.0
    for name, row in zip(names, merged, strict=True):
        peak = f" {np.nanmax(row):.2f}" if np.isfinite(row).any() else ""
        text.append(f"\n{name[:name_width]:>{name_width}} ")
        text.append(sparkline(row, top), style="cyan")
        text.append(peak, style="dim")
        lines.append(None)
    span = merged.shape[-1]
    left, right = axis
    gap = max(1, span - len(left) - len(right))
    note = f"  {per} bins per column" if per > 1 else ""
    text.append(f"\n{'':>{name_width}} {left}{' ' * gap}{right}{note}", style="dim")
    lines.append(None)


def _begin(items: list[Item], index: int, empty_text: str) -> tuple[Text, LineBins, Item | None]:
    """A cycling view begun: its text, its line map and the item `index` picks (counting round); no item when
    there are none, and the text says `empty_text`."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if not items:
        text.append(empty_text, style="dim")
        return text, [None], None
    return text, [], items[index % len(items)]


def _position(text: Text, key: str, index: int, count: int) -> None:
    """`  b: 2/3`: which of the items is shown and the key that steps on; nothing when there is one."""
    if count > 1:
        text.append(f"  {key}: {index % count + 1}/{count}", style="dim")


def split_text(splits: list[SplitTuning], index: int, width: int) -> tuple[Text, LineBins]:
    text, lines, split = _begin(splits, index, "no split: no continuous tuning curve\nfor this feature, or no "
                                "categorical\nvariable with 2–8 levels")
    if split is None:
        return text, lines
    text.append(split.variable, style="bold")
    text.append(" by ")
    text.append(split.split_by, style="bold")
    text.append(f"  {'named by the suggestion' if split.preferred else f'sep {split.separation:.2f}'}", style="dim")
    _position(text, "b", index, len(splits))
    lines.append(None)
    _sparks(text, lines, split.levels, split.means, split.n, width, (f"{split.edges[0]:.3g}", f"{split.edges[-1]:.3g}"))
    _table(text, lines, "bins", split.bin_labels, split.levels, split.means, split.sem, width)
    return text, lines


def peri_text(events: list[PeriEvent], index: int, width: int) -> tuple[Text, LineBins]:
    text, lines, peth = _begin(events, index, "no events in this dataset: none of\nits columns holds per-bin "
                               "counts or\n0/1 flags, or trial event times")
    if peth is None:
        return text, lines
    text.append(f"around {peth.event}", style="bold")
    text.append(f"  {peth.n_events:,} events", style="dim")
    _position(text, "e", index, len(events))
    lines.append(None)
    n = np.ones((1, len(peth.means)))
    _sparks(text, lines, ["mean"], peth.means[None, :], n, width,
            (f"{peth.offsets[0]:+.2g}s", f"{peth.offsets[-1]:+.2g}s"))
    labels = [f"{a:+.2f}…{b:+.2f}" for a, b in zip(peth.offsets[:-1], peth.offsets[1:], strict=True)]
    _table(text, lines, "bins", labels, ["mean"], peth.means[None, :], peth.sem[None, :], width)
    return text, lines


def tuning_text(panel: FeaturePanel, width: int) -> tuple[Text, LineBins]:
    text = render_tunings(panel.tuning, width)
    lines: LineBins = []
    for tuning in panel.tuning:
        if lines:
            lines.append(None)  # the blank line between variables
        lines.append(None)
        lines += [(f"{tuning.variable} {'bins' if tuning.kind in ('continuous', 'circular') else 'levels'}",
                   i + 1, len(tuning.labels)) for i in range(len(tuning.labels))]
    return text, lines or [None]


class TuningPanel(TextPanel):
    """The tuning panel, with its view and the split variable and event shown, kept from feature to feature."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view = "tuning"
        self.split_index = 0
        self.event_index = 0
        self.panel: FeaturePanel | None = None
        self._line_bins: LineBins = []

    def show_feature(self, panel: FeaturePanel, *, keep_scroll: bool = False) -> None:
        self.panel = panel
        y = self.scroll_offset.y
        self.show(self._text)
        if keep_scroll:
            self.scroll_to(0, y, animate=False, immediate=True)
        self._hint()
        self.call_after_refresh(self._hint)  # the first time, the panel's height is known only after layout

    def on_resize(self) -> None:
        super().on_resize()
        self._hint()

    def _text(self, width: int) -> Text:
        panel = self.panel
        if panel is None:
            return Text("")
        if self.view == "split":
            text, self._line_bins = split_text(panel.splits, self.split_index, width)
        elif self.view == "peri":
            text, self._line_bins = peri_text(panel.peri_events, self.event_index, width)
        else:
            text, self._line_bins = tuning_text(panel, width)
        return text

    def cycle_view(self) -> str:
        self._show_view(VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)])
        return self.view

    def next_split(self) -> None:
        """The split view; when it is already shown, the split by the next variable."""
        if self.view == "split":
            self.split_index += 1
        self._show_view("split")

    def next_event(self) -> None:
        """The peri-event view; when it is already shown, the histogram around the next event."""
        if self.view == "peri":
            self.event_index += 1
        self._show_view("peri")

    def _show_view(self, view: str) -> None:
        self.view = view
        if self.panel is not None:
            self.show_feature(self.panel)

    def page(self, direction: int) -> None:
        height = max(1, self.scrollable_content_region.height)
        self.scroll_to(0, self.scroll_offset.y + direction * max(1, height - 1), animate=False, immediate=True)
        self._hint()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._hint()

    def bins_in_view(self) -> tuple[str, int, int, int] | None:
        """(what, first bin, last bin, bins in all) of the first group of bins in view; None when nothing is
        hidden."""
        height = self.scrollable_content_region.height or self.size.height
        if not height:
            return None
        top = int(self.scroll_offset.y)
        visible = [entry for entry in self._line_bins[top: top + height] if entry is not None]
        hidden = any(entry is not None for entry in self._line_bins[:top] + self._line_bins[top + height:])
        if not hidden:
            return None
        if not visible:
            entry = next(e for e in self._line_bins[top + height:] + self._line_bins[:top] if e is not None)
            return entry[0], 0, 0, entry[2]
        # Name the group whose bins are cut (direction's levels may all show while position's are cut).
        cut = {entry[0] for entry in self._line_bins[:top] + self._line_bins[top + height:] if entry is not None}
        what = next((entry[0] for entry in visible if entry[0] in cut), visible[0][0])
        numbers = [entry[1] for entry in visible if entry[0] == what]
        if not numbers:
            entry = next(e for e in self._line_bins if e is not None and e[0] == what)
            return what, 0, 0, entry[2]
        return what, numbers[0], numbers[-1], next(e[2] for e in visible if e[0] == what)

    def _hint(self) -> None:
        title = FULL_TITLES[self.view]
        span = self.bins_in_view()
        if span is not None:
            what, first, last, total = span
            top = int(self.scroll_offset.y)
            below = top + (self.scrollable_content_region.height or 0) < len(self._line_bins)
            arrows = ("↑" if top > 0 else "") + ("↓" if below else "")
            where = f"{what} {first}–{last} of {total}" if first else f"{total} {what}, rows below"
            title = f"{TITLES[self.view]} · {where} {arrows}"
        self.border_title = title
