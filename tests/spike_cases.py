"""Helpers for the spike-import tests: a small synthetic session written in every spike format.

The session: an animal runs back and forth on a 100 cm track (3 s runs, 1 s pauses at the ends) for
80 s; four place cells fire in fields at 20, 40, 60 and 80 cm, one unit follows speed, one fires
rarely. Behaviour is sampled at 50 Hz on the same clock. Everything is seeded.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.io

DURATION_S = 80.0
START_S = 10.0
"""The session starts 10 s into the acquisition clock, as real ones do."""
RUN_S, PAUSE_S = 3.0, 1.0
TRACK_CM = 100.0
BEHAVIOUR_HZ = 50.0
FIELDS_CM = (20.0, 40.0, 60.0, 80.0)
UNIT_NAMES = ("place20", "place40", "place60", "place80", "speedy", "rare")


@dataclass
class Session:
    trains: dict[str, np.ndarray]
    """Spike times (s) per unit, sorted."""
    behaviour: pl.DataFrame
    """time_s, position (cm), speed (cm/s), context (text): 50 Hz samples."""
    trials: pl.DataFrame
    """One row per run: start, stop, direction."""
    rewards: np.ndarray
    """Reward times: each arrival at an end."""


def trajectory(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position (cm), speed (cm/s) and run index (−1 while pausing) at times t (s from session start)."""
    period = RUN_S + PAUSE_S
    lap, phase = np.divmod(t, period)
    running = phase < RUN_S
    progress = np.where(running, phase / RUN_S, 1.0)
    forward = lap % 2 == 0
    position = TRACK_CM * np.where(forward, progress, 1 - progress)
    speed = np.where(running, TRACK_CM / RUN_S, 0.0)
    return position, speed, np.where(running, lap, -1).astype(int)


def make_session(seed: int = 3) -> Session:
    rng = np.random.default_rng(seed)
    dt = 0.001
    t = np.arange(0, DURATION_S, dt)
    position, speed, _ = trajectory(t)
    rates = {f"place{int(c)}": 1.0 + 25.0 * np.exp(-0.5 * ((position - c) / 6.0) ** 2) for c in FIELDS_CM}
    rates["speedy"] = 2.0 + 0.2 * speed
    rates["rare"] = np.full(len(t), 0.3)
    trains = {}
    for name in UNIT_NAMES:
        fired = rng.random(len(t)) < rates[name] * dt
        trains[name] = np.round(START_S + t[fired] + rng.uniform(0, dt, int(fired.sum())), 6)
    tb = np.arange(0, DURATION_S, 1 / BEHAVIOUR_HZ)
    pos_b, speed_b, _ = trajectory(tb)
    behaviour = pl.DataFrame({"time_s": START_S + tb, "position": pos_b, "speed": speed_b,
                              "context": np.where(tb < DURATION_S / 2, "light", "dark")})
    n_runs = int(DURATION_S // (RUN_S + PAUSE_S))
    starts = START_S + np.arange(n_runs) * (RUN_S + PAUSE_S)
    trials = pl.DataFrame({"start": starts, "stop": starts + RUN_S,
                           "direction": np.where(np.arange(n_runs) % 2 == 0, "out", "back")})
    return Session(trains, behaviour, trials, starts + RUN_S)


# -- writers ----------------------------------------------------------------------------------------------
def write_kilosort(folder: Path, session: Session, *, rate: float = 30_000.0,
                   labels: dict[int, str] | None = None) -> Path:
    """A Kilosort/Phy folder: cluster ids 0..5 are the units (in UNIT_NAMES order), cluster 9 is noise."""
    folder.mkdir(parents=True, exist_ok=True)
    times = [session.trains[n] for n in UNIT_NAMES] + [session.trains["rare"] + 0.0005]
    ids = [np.full(len(t), c, dtype=np.int32) for c, t in zip([0, 1, 2, 3, 4, 5, 9], times, strict=True)]
    samples = np.round(np.concatenate(times) * rate).astype(np.uint64)
    clusters = np.concatenate(ids)
    order = np.argsort(samples, kind="stable")
    np.save(folder / "spike_times.npy", samples[order].reshape(-1, 1))
    np.save(folder / "spike_clusters.npy", clusters[order])
    (folder / "params.py").write_text(f"dat_path = 'raw.bin'\nn_channels_dat = 64\nsample_rate = {rate}\n")
    labels = labels if labels is not None else {**{c: "good" for c in range(6)}, 9: "noise"}
    (folder / "cluster_group.tsv").write_text(
        "cluster_id\tgroup\n" + "".join(f"{c}\t{g}\n" for c, g in labels.items()))
    return folder


def _struct(times: np.ndarray) -> dict:
    return {"time": times.reshape(-1, 1), "meanrate": float(len(times) / DURATION_S)}


def write_mat(path: Path, session: Session, trains: dict[str, np.ndarray] | None = None) -> Path:
    """A Frank-lab style MATLAB file: spikes{tetrode}{cell} structs with a `time` field, plus an empty
    placeholder cell and a cell whose unit has no spikes. Units are spikes{1}{1}, spikes{1}{2}, spikes{1}{4},
    spikes{2}{1}, spikes{2}{2}, spikes{2}{3} (UNIT_NAMES order); spikes{1}{3} is [] and spikes{2}{4} has no spikes.
    """
    trains = trains if trains is not None else session.trains
    t = [trains[n] for n in UNIT_NAMES]
    tetrode1 = np.empty((1, 4), dtype=object)
    tetrode1[0, 0], tetrode1[0, 1], tetrode1[0, 2], tetrode1[0, 3] = _struct(t[0]), _struct(t[1]), np.zeros((0, 0)), \
        _struct(t[2])
    tetrode2 = np.empty((1, 4), dtype=object)
    tetrode2[0, 0], tetrode2[0, 1], tetrode2[0, 2] = _struct(t[3]), _struct(t[4]), _struct(t[5])
    tetrode2[0, 3] = _struct(np.zeros(0))
    spikes = np.empty((1, 2), dtype=object)
    spikes[0, 0], spikes[0, 1] = tetrode1, tetrode2
    scipy.io.savemat(path, {"spikes": spikes})
    return path


MAT_NAMES = ("spikes{1}{1}", "spikes{1}{2}", "spikes{1}{4}", "spikes{2}{1}", "spikes{2}{2}", "spikes{2}{3}")
"""write_mat's unit names, in UNIT_NAMES order."""


def write_spike_table(path: Path, session: Session) -> Path:
    """One row per spike, (unit, time), in time order across units."""
    frame = pl.concat([pl.DataFrame({"unit": [n] * len(t), "time": t}) for n, t in session.trains.items()])
    frame = frame.sort("time")
    frame.write_parquet(path) if path.suffix == ".parquet" else frame.write_csv(path)
    return path


def write_tracking(path: Path, times: np.ndarray, x: np.ndarray, y: np.ndarray, clock: int = 30_000) -> Path:
    """A .videoPositionTracking file: header, then <u4 ticks, u2 x, u2 y, u2 x2, u2 y2> records."""
    header = (b"<Start settings>\nthreshold: 199\ndark: 0\nclockrate: 30000\ncamera resolution: 640x480\n"
              b"pixel scale: 0 pix/cm\nFields: <time uint32><xloc uint16><yloc uint16><xloc2 uint16>"
              b"<yloc2 uint16>\n<End settings>\n")
    records = b"".join(struct.pack("<IHHHH", round(t * clock), int(a), int(b), 0, 0)
                       for t, a, b in zip(times, x, y, strict=True))
    path.write_bytes(header + records)
    return path


def session_pixels(session: Session, seed: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The behaviour as camera pixels on a diagonal track (60 Hz, a pixel of jitter)."""
    rng = np.random.default_rng(seed)
    tb = np.arange(0, DURATION_S, 1 / 60)
    position, _, _ = trajectory(tb)
    x = 100 + 3.0 * position + rng.integers(-1, 2, len(tb))
    y = 400 - 2.0 * position + rng.integers(-1, 2, len(tb))
    return START_S + tb, x, y


# -- the CLI and the database ---------------------------------------------------------------------------
def run_mini(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MINI_DB"}
    return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_refused(done: subprocess.CompletedProcess[str], words: tuple[str, ...]) -> None:
    """One line on stderr, starting `mini: error:`, holding every word; exit status 2; no stdout."""
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("mini: error: "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    # Text from the files comes out escaped: no terminal escape code or other control character gets through.
    assert lines[0].isprintable(), repr(lines[0])


def expected_counts(trains: list[np.ndarray], edges: np.ndarray) -> np.ndarray:
    """[bins × units] by np.histogram: the independent reference for binning."""
    return np.stack([np.histogram(t, edges)[0] for t in trains], axis=1)
