"""Video position tracking (`.videoPositionTracking`, Trodes/Frank-lab) → position along a track and speed.

The file is a text header that ends with `<End settings>` and a newline, then fixed-size little-endian
records described by its `Fields:` line, normally
`<time uint32><xloc uint16><yloc uint16><xloc2 uint16><yloc2 uint16>` at about 60 Hz. Timestamps count
ticks of the acquisition clock (`clockrate:`, 30 kHz), the same clock the spike sorter's spike times
come from, so `ticks / clockrate` is already in the spikes' seconds: no offset is applied. (On the
nelpy linear-track session, spike times are exact multiples of 1/30000 s and the tracking starts 34 ms
after the epoch the spike file states; a scan of time shifts puts the place-field fit's peak within
0.1 s of zero, the camera's own latency.)

Position along the track is the projection of (x, y) on their principal axis: a linear track is the
one direction along which position varies much (on that session, 160 px against 20 px across).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from engine.errors import InputError
from engine.ingest.behaviour import MAX_TIME_S, BehaviourSource, default_max_gap
from engine.options import non_negative

TRACKING_SUFFIX = ".videopositiontracking"
_END = b"<End settings>"
_TYPES = {"uint8": "u1", "int8": "i1", "uint16": "u2", "int16": "i2", "uint32": "u4", "int32": "i4",
          "uint64": "u8", "int64": "i8", "single": "f4", "float": "f4", "double": "f8"}


@dataclass(frozen=True)
class TrackingOptions:
    """How to turn camera pixels into behaviour."""

    frozen_s: float = 10.0
    """A position that does not change by a pixel for this long is tracking lost (an animal that is
    really there jitters by a pixel within a second; the session's rest period sits at one corner
    pixel for 16 minutes). 0 keeps every sample."""
    speed_smooth_s: float = 0.1
    """Gaussian σ (seconds) of the smoothing applied to x and y before differentiating for speed."""

    def __post_init__(self) -> None:
        non_negative("--frozen-s", self.frozen_s, "s", high=MAX_TIME_S)
        non_negative("speed_smooth_s", self.speed_smooth_s, "s", high=MAX_TIME_S)


def is_tracking_file(path: str | Path) -> bool:
    return str(path).lower().endswith(TRACKING_SUFFIX)


def _header(raw: bytes, path: Path) -> tuple[dict[str, str], int]:
    end = raw.find(_END)
    if end < 0:
        raise InputError(f"{path}: no '<End settings>' line; not a videoPositionTracking file")
    body = end + len(_END)
    body += 2 if raw[body:body + 2] == b"\r\n" else 1 if raw[body:body + 1] == b"\n" else 0
    settings = {}
    for line in raw[:end].decode("latin-1").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            settings[key.strip().lower()] = value.strip()
    return settings, body


def _record_type(settings: dict[str, str], path: Path) -> np.dtype:
    fields = re.findall(r"<(\w+)\s+(\w+)>", settings.get("fields", ""))
    if not fields:
        raise InputError(f"{path}: the header has no 'Fields:' line describing the records")
    unknown = [t for _, t in fields if t not in _TYPES]
    if unknown:
        raise InputError(f"{path}: field type '{unknown[0]}' in the header is not one mini reads")
    names = [n for n, _ in fields]
    for needed in ("time", "xloc", "yloc"):
        if needed not in names:
            raise InputError(f"{path}: the records have no '{needed}' field (fields: {', '.join(names)})")
    return np.dtype([(n, "<" + _TYPES[t]) for n, t in fields])


def read_tracking_xy(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, str]]:
    """Times (s), x and y (pixels, NaN where the tracker reported nothing) and the header settings."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw:
        raise InputError(f"{path}: file is empty")
    settings, body = _header(raw, path)
    record = _record_type(settings, path)
    try:
        clock = float(settings.get("clockrate", "nan"))
    except ValueError:
        clock = float("nan")
    if not (clock > 0 and np.isfinite(clock)):
        raise InputError(f"{path}: the header's clockrate is '{settings.get('clockrate')}'; need ticks per second")
    size = len(raw) - body
    if size % record.itemsize:
        raise InputError(f"{path}: {size} bytes of records is not a whole number of {record.itemsize}-byte "
                         "records (truncated file?)")
    records = np.frombuffer(raw, dtype=record, offset=body)
    if len(records) < 2:
        raise InputError(f"{path}: {len(records)} position sample(s); need at least 2")
    ticks = records["time"].astype(np.int64)
    steps = np.diff(ticks)
    if (steps < 0).any():
        row = int(np.argmax(steps < 0)) + 1
        raise InputError(f"{path}: record {row} (tick {ticks[row]}) is earlier than the record before it; "
                         "samples must be in time order")
    keep = np.r_[True, steps > 0]  # a repeated timestamp is the same frame written twice
    x = records["xloc"].astype(np.float64)[keep]
    y = records["yloc"].astype(np.float64)[keep]
    lost = (x == 0) & (y == 0)  # the tracker writes 0, 0 when it sees no LED
    x[lost], y[lost] = np.nan, np.nan
    settings["repeated_timestamps"] = str(int((~keep).sum()))
    return ticks[keep] / clock, x, y, settings


def frozen_samples(times: np.ndarray, x: np.ndarray, y: np.ndarray, frozen_s: float) -> np.ndarray:
    """Samples inside a run of identical positions lasting at least frozen_s seconds."""
    if frozen_s <= 0:
        return np.zeros(len(times), dtype=bool)
    changed = np.r_[True, (np.diff(x) != 0) | (np.diff(y) != 0)]
    run = np.cumsum(changed) - 1
    starts = np.flatnonzero(changed)
    ends = np.r_[starts[1:], len(times)] - 1
    lasting = times[ends] - times[starts] >= frozen_s
    return lasting[run]


def principal_axis(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Centre and unit direction of largest variance of the valid (x, y), the direction pointing to +x,
    and the share of the 2-D variance along it (near 1 on a linear track, far less on a maze)."""
    valid = np.isfinite(x) & np.isfinite(y)
    points = np.c_[x[valid], y[valid]]
    centre = points.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((points - centre).T))
    axis = vectors[:, -1]
    share = float(values[-1] / values.sum()) if values.sum() > 0 else float("nan")
    return centre, axis if axis[0] >= 0 else -axis, share


def _smooth_segments(times: np.ndarray, values: np.ndarray, sigma_s: float, max_gap: float) -> np.ndarray:
    """Gaussian-smooth within runs of valid samples no further apart than max_gap (never across a gap)."""
    from scipy.ndimage import gaussian_filter1d

    out = np.full(len(values), np.nan)
    valid = np.isfinite(values)
    breaks = ~valid | np.r_[True, np.diff(times) > max_gap]
    segment = np.cumsum(breaks)
    step = float(np.median(np.diff(times)))
    for s in np.unique(segment[valid]):
        rows = np.flatnonzero((segment == s) & valid)
        if len(rows) >= 3:
            out[rows] = gaussian_filter1d(values[rows], sigma_s / step, mode="nearest")
    return out


def read_position_tracking(path: str | Path, options: TrackingOptions | None = None) -> BehaviourSource:
    """`position` (along the track, from its lowest end) and `speed` (2-D, per second) from a tracking file.

    Both are in pixels unless the header states a pixel scale (`pixel scale: N pix/cm`), then in cm.
    """
    options = options or TrackingOptions()
    times, x, y, settings = read_tracking_xy(path)
    frozen = frozen_samples(times, x, y, options.frozen_s)
    x[frozen], y[frozen] = np.nan, np.nan
    if np.isfinite(x).sum() < 3:
        raise InputError(f"{path}: fewer than 3 valid position samples (after dropping frozen ones)")
    scale_match = re.match(r"([\d.]+)\s*pix/cm", settings.get("pixel scale", ""))
    per_cm = float(scale_match.group(1)) if scale_match else 0.0
    unit, factor = ("cm", 1 / per_cm) if per_cm > 0 else ("px", 1.0)
    centre, axis, axis_share = principal_axis(x, y)
    along = (x - centre[0]) * axis[0] + (y - centre[1]) * axis[1]
    origin = float(np.nanmin(along))
    max_gap = default_max_gap(times)
    sx = _smooth_segments(times, x, options.speed_smooth_s, max_gap)
    sy = _smooth_segments(times, y, options.speed_smooth_s, max_gap)
    # Differences only between neighbours of the same segment: a gap's two sides are never joined.
    dt = np.diff(times)
    step = np.hypot(np.diff(sx), np.diff(sy)) / dt
    step[~(np.isfinite(step) & (dt <= max_gap))] = np.nan
    both = np.c_[np.r_[step, np.nan], np.r_[np.nan, step]]  # the step after and the step before each sample
    n = np.isfinite(both).sum(axis=1)
    speed = np.where(n > 0, np.nansum(both, axis=1) / np.maximum(n, 1), np.nan)
    columns = pl.DataFrame({"position": (along - origin) * factor, "speed": speed * factor}).fill_nan(None)
    notes = [f"{path}: position along the track's principal axis ({unit}); speed in {unit}/s"]
    if frozen.any():
        notes.append(f"{path}: {int(frozen.sum()):,} samples where the position sat still for >= "
                     f"{options.frozen_s:g} s are treated as tracking lost (missing)")
    details = {"kind": "video_position_tracking", "clock_hz": float(settings["clockrate"]), "unit": unit,
               "axis": axis.tolist(), "axis_share": axis_share, "centre_px": centre.tolist(), "origin_px": origin,
               "frozen_s": options.frozen_s, "n_frozen_samples": int(frozen.sum()),
               "speed_smooth_s": options.speed_smooth_s,
               "repeated_timestamps": int(settings["repeated_timestamps"])}
    return BehaviourSource(str(path), times, columns, notes=notes, details=details)
