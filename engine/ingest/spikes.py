"""Spike trains: check them, filter units, and bin them into an [examples × units] count matrix.

The readers (engine.ingest.spike_readers, engine.ingest.nwb) turn each file format into SpikeTrains; everything
after that is shared, so every format is held to the same checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.errors import InputError
from engine.memory import check_fits


@dataclass
class SpikeTrains:
    """Spike times in seconds, one sorted array per unit, as read from one source."""

    names: list[str]
    """One name per unit, as the source names it (e.g. `cluster_12`, `spikes{1}{1}{4}{10}`)."""
    times: list[np.ndarray]
    """Per unit, its spike times in seconds (float64)."""
    label: str
    """How errors refer to the source (usually the file or folder)."""
    span: tuple[float, float] | None = None
    """The recording's time range where the source states it (e.g. a MATLAB `timerange`)."""
    notes: list[str] = field(default_factory=list)
    """What the reader decided on the person's behalf (units left out, fields used)."""


@dataclass(frozen=True)
class UnitFilter:
    """Which units to keep; each rule is measured inside the imported time range."""

    min_rate_hz: float = 0.0
    """Drop units firing below this mean rate."""
    max_isi_violations: float | None = None
    """Drop units whose fraction of inter-spike intervals shorter than the refractory period is higher."""
    refractory_s: float = 0.0015
    """The refractory period that ISI violations are counted against."""

    def __post_init__(self) -> None:
        # `not x >= 0` (rather than `x < 0`) so that NaN, which compares false either way, is refused too.
        if not (np.isfinite(self.min_rate_hz) and self.min_rate_hz >= 0):
            raise InputError(f"--min-rate {self.min_rate_hz}: must be a finite rate of 0 Hz or more")
        if self.max_isi_violations is not None and not (np.isfinite(self.max_isi_violations)
                                                        and 0 <= self.max_isi_violations <= 1):
            raise InputError(f"--max-isi-violations {self.max_isi_violations}: must be a fraction between 0 and 1")
        if not (np.isfinite(self.refractory_s) and self.refractory_s > 0):
            raise InputError(f"--refractory-ms {self.refractory_s * 1e3}: must be a finite number above 0")


def check_trains(trains: SpikeTrains) -> None:
    """Refuse NaN/inf, negative and unsorted spike times, naming the unit and the spike."""
    if not trains.names:
        raise InputError(f"{trains.label}: no units found")
    seen: set[str] = set()
    for name, times in zip(trains.names, trains.times, strict=True):
        if name in seen:
            raise InputError(f"{trains.label}: unit '{name}' appears more than once")
        seen.add(name)
        bad = ~np.isfinite(times)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{trains.label}: unit '{name}' spike {i} is {times[i]}; spike times must be finite")
        if (times < 0).any():
            i = int(np.argmax(times < 0))
            raise InputError(f"{trains.label}: unit '{name}' spike {i} is at {times[i]:g} s; spike times must "
                             "be >= 0")
        backwards = np.diff(times) < 0
        if backwards.any():
            i = int(np.argmax(backwards)) + 1
            raise InputError(f"{trains.label}: unit '{name}' spike {i} ({times[i]:.6g} s) comes before spike "
                             f"{i - 1} ({times[i - 1]:.6g} s); spike times must be sorted")


def isi_violation_fraction(times: np.ndarray, refractory_s: float) -> float:
    """Fraction of inter-spike intervals shorter than the refractory period (NaN with < 2 spikes).

    A well-isolated neuron cannot fire twice within its refractory period, so violations measure
    contamination by other neurons' spikes.
    """
    if len(times) < 2:
        return float("nan")
    return float(np.mean(np.diff(times) < refractory_s))


def time_range(trains: SpikeTrains, given: tuple[float, float] | None) -> tuple[float, float]:
    """The range to bin: the person's, else the source's stated span, else first to last spike."""
    if given is not None:
        start, stop = given
        if not (np.isfinite(start) and np.isfinite(stop) and stop > start):
            raise InputError(f"--time-range {start:g},{stop:g}: need START < STOP in seconds")
        firsts = [t[0] for t in trains.times if len(t)]
        lasts = [t[-1] for t in trains.times if len(t)]
        if firsts and (stop <= min(firsts) or start > max(lasts)):
            raise InputError(f"--time-range {start:g},{stop:g}: holds no spike of {trains.label} (its spikes run "
                             f"{min(firsts):.6g}-{max(lasts):.6g} s)")
        return float(start), float(stop)
    if trains.span is not None:
        return trains.span
    firsts = [t[0] for t in trains.times if len(t)]
    lasts = [t[-1] for t in trains.times if len(t)]
    if not firsts:
        raise InputError(f"{trains.label}: no unit has any spikes")
    return float(min(firsts)), float(max(lasts))


def filter_units(trains: SpikeTrains, window: tuple[float, float], rules: UnitFilter
                 ) -> tuple[list[int], dict[str, dict[str, float]], list[str]]:
    """Indices of the units to keep, every unit's metrics, and a note per rule that dropped any."""
    start, stop = window
    duration = stop - start
    kept, metrics = [], {}
    dropped: dict[str, list[str]] = {"no spikes": [], "rate": [], "isi": []}
    for i, (name, times) in enumerate(zip(trains.names, trains.times, strict=True)):
        inside = times[(times >= start) & (times < stop)]
        rate = len(inside) / duration
        isi = isi_violation_fraction(inside, rules.refractory_s)
        metrics[name] = {"n_spikes": len(inside), "rate_hz": rate, "isi_violations": isi}
        if len(inside) == 0:
            dropped["no spikes"].append(name)
        elif rate < rules.min_rate_hz:
            dropped["rate"].append(name)
        elif rules.max_isi_violations is not None and isi > rules.max_isi_violations:
            dropped["isi"].append(name)
        else:
            kept.append(i)
    why = {"no spikes": "with no spikes in the time range",
           "rate": f"below --min-rate {rules.min_rate_hz:g} Hz",
           "isi": f"above --max-isi-violations {rules.max_isi_violations} (ISIs < {rules.refractory_s * 1e3:g} ms)"}
    notes = [f"left out {len(names)} unit(s) {why[rule]}: {_listing(names)}" for rule, names in dropped.items()
             if names]
    if not kept:
        raise InputError(f"{trains.label}: no unit is left after the unit filters ({'; '.join(notes)})")
    return kept, metrics, notes


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


BYTES_PER_BIN = 24
"""Per bin, whatever the units: its edge, its centre and its trial (float64 / int64)."""
BYTES_PER_CELL = 12
"""Per bin and unit: the int32 counts and the float32 matrix made from them, and a float32 working copy."""


def bin_edges(window: tuple[float, float], bin_size_s: float, n_units: int = 1) -> np.ndarray:
    """Edges of whole bins from the start of the window; a last partial bin is not made. Refused before any
    allocation when the bins of `n_units` units would not fit in memory (engine.memory)."""
    if not (bin_size_s > 0 and np.isfinite(bin_size_s)):
        raise InputError(f"--bin-size {bin_size_s}: must be a positive number of seconds")
    start, stop = window
    span = (stop - start) / bin_size_s
    if not np.isfinite(span):
        raise InputError(f"--bin-size {bin_size_s:g} over {stop - start:g} s: too many bins to count")
    check_fits(f"--bin-size {bin_size_s:g} over {stop - start:,.0f} s is {span:.3g} bins × {n_units} units",
               span * (BYTES_PER_BIN + BYTES_PER_CELL * n_units))
    n_bins = int(np.floor(span + 1e-9))
    if n_bins < 1:
        raise InputError(f"--bin-size {bin_size_s:g}: the time range {start:g}-{stop:g} s holds no whole bin")
    # start + k·bin, not a running sum, so edges do not drift over an hour of bins.
    return start + np.arange(n_bins + 1) * bin_size_s


def bin_spikes(times: list[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """Spike counts [bins × units] (int32): spike t is in bin i when edges[i] <= t < edges[i+1]."""
    counts = np.zeros((len(edges) - 1, len(times)), dtype=np.int32)
    for unit, unit_times in enumerate(times):
        which = np.searchsorted(edges, unit_times, side="right") - 1
        inside = (which >= 0) & (which < len(edges) - 1)
        counts[:, unit] = np.bincount(which[inside], minlength=len(edges) - 1)
    return counts
