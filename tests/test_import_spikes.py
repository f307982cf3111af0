"""`mini import-spikes` on good input: each spike format, behaviour alignment, trials, laps, events,
unit filters, smoothing and normalisation; everything read back from the real DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from spike_cases import (
    DURATION_S,
    MAT_NAMES,
    START_S,
    UNIT_NAMES,
    expected_counts,
    make_session,
    run_mini,
    session_pixels,
    trajectory,
    write_kilosort,
    write_mat,
    write_spike_table,
    write_tracking,
)

from store import Store

BIN = 0.1


def _read(db_path: Path) -> dict[str, pl.DataFrame]:
    with Store.open(db_path, read_only=True) as db:
        tables = {t: db.frame(f"SELECT * FROM {t}") for t in
                  ("datasets", "units", "trials", "examples", "counts", "natural_variables", "natural_values")}
    tables["options"] = json.loads(tables["datasets"]["options"][0])
    return tables


def _dense(tables: dict[str, pl.DataFrame]) -> np.ndarray:
    ds = tables["datasets"].row(0, named=True)
    dense = np.zeros((ds["n_examples"], ds["n_units"]))
    c = tables["counts"]
    dense[c["example_id"].to_numpy(), c["unit_id"].to_numpy()] = c["value"].to_numpy()
    return dense


def _variable(tables: dict[str, pl.DataFrame], name: str, column: str = "value") -> np.ndarray:
    """One value per example (NaN / None where missing)."""
    n = tables["datasets"]["n_examples"][0]
    rows = tables["natural_values"].filter(pl.col("variable") == name)
    out = np.full(n, np.nan) if column == "value" else np.full(n, None, dtype=object)
    out[rows["example_id"].to_numpy()] = rows[column].to_numpy()
    return out


def _write_source(fmt: str, folder: Path) -> tuple[str, list[str], list[str]]:
    """The source to import, the unit names mini should give, and which session unit each is."""
    session = make_session()
    if fmt == "kilosort":
        write_kilosort(folder / "ks", session)
        return "ks", [f"cluster_{c}" for c in range(6)], list(UNIT_NAMES)
    if fmt == "mat":
        write_mat(folder / "spikes.mat", session)
        return "spikes.mat", list(MAT_NAMES), list(UNIT_NAMES)
    write_spike_table(folder / "spikes.csv", session)
    return "spikes.csv", sorted(UNIT_NAMES), sorted(UNIT_NAMES)


@pytest.mark.parametrize("fmt", ["kilosort", "mat", "table"])
def test_every_spike_format_bins_exactly(tmp_path: Path, fmt: str) -> None:
    session = make_session()
    source, names, units = _write_source(fmt, tmp_path)
    session.behaviour.write_csv(tmp_path / "behaviour.csv")
    done = run_mini("import-spikes", source, "--behaviour", "behaviour.csv", "--bin-size", str(BIN),
                    "--time-range", f"{START_S},{START_S + DURATION_S}", "--name", "s", "--db", "x.duckdb",
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported 's'" in done.stdout
    tables = _read(tmp_path / "x.duckdb")
    ds = tables["datasets"].row(0, named=True)
    assert (ds["kind"], ds["bin_size_s"], ds["n_examples"]) == ("spike_counts", BIN, round(DURATION_S / BIN))
    assert tables["units"].sort("unit_id")["name"].to_list() == names

    # The counts are np.histogram's, unit for unit (Kilosort's are rounded to its 30 kHz samples).
    edges = START_S + np.arange(round(DURATION_S / BIN) + 1) * BIN
    trains = [session.trains[n] for n in units]
    if fmt == "kilosort":
        trains = [np.round(t * 30_000) / 30_000 for t in trains]
    np.testing.assert_array_equal(_dense(tables), expected_counts(trains, edges))
    rates = tables["units"].sort("unit_id")["firing_rate_hz"].to_numpy()
    np.testing.assert_allclose(rates, expected_counts(trains, edges).sum(0) / DURATION_S)

    # Behaviour at bin centres: continuous interpolated, categorical the last value at or before.
    centres = edges[:-1] + BIN / 2
    b = session.behaviour
    np.testing.assert_allclose(_variable(tables, "position"), np.interp(centres, b["time_s"], b["position"]),
                               atol=1e-9)
    last = np.searchsorted(b["time_s"].to_numpy(), centres, side="right") - 1
    assert list(_variable(tables, "context", "category")) == b["context"].to_numpy()[last].tolist()
    kinds = dict(tables["natural_variables"].select("variable", "kind").iter_rows())
    assert kinds == {"position": "continuous", "speed": "continuous", "context": "categorical"}
    np.testing.assert_allclose(tables["examples"].sort("example_id")["time_s"].to_numpy(), edges[:-1])

    options = tables["options"]
    assert options["binning"]["bin_size_s"] == BIN and options["binning"]["time_range"] == [
        START_S, START_S + DURATION_S]
    assert options["behaviour"][0]["methods"] == {"position": "interpolate", "speed": "interpolate",
                                                  "context": "last"}
    assert ds["trial_source"] == "blocks"  # no trials: contiguous blocks, as in `mini import`


def test_kilosort_keeps_good_clusters_and_mat_skips_placeholders(tmp_path: Path) -> None:
    session = make_session()
    write_kilosort(tmp_path / "ks", session, labels={0: "good", 1: "mua", 2: "good", 9: "noise"})
    session.behaviour.write_csv(tmp_path / "b.csv")
    done = run_mini("import-spikes", "ks", "--behaviour", "b.csv", "--db", "k.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _read(tmp_path / "k.duckdb")["units"].sort("unit_id")["name"].to_list() == ["cluster_0", "cluster_2"]
    assert "no label in cluster_group.tsv" in done.stderr  # clusters 3, 4, 5 are unlabelled
    done = run_mini("import-spikes", "ks", "--behaviour", "b.csv", "--groups", "good,mua", "--name", "gm",
                    "--db", "k.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr

    write_mat(tmp_path / "s.mat", session)
    done = run_mini("import-spikes", "s.mat", "--behaviour", "b.csv", "--db", "m.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # The unit with no spikes is left out with a note naming it; the empty cell is no unit at all.
    assert "left out 1 unit(s) with no spikes" in done.stderr and "spikes{2}{4}" in done.stderr
    tables = _read(tmp_path / "m.duckdb")
    assert tables["units"]["name"].to_list() == list(MAT_NAMES)
    assert tables["options"]["spikes"]["unit_metrics"]["spikes{2}{4}"]["n_spikes"] == 0


def test_behaviour_gaps_become_missing_never_invented(tmp_path: Path) -> None:
    session = make_session()
    b = session.behaviour.with_row_index("row")
    # Tracking lost for 1 s (rows removed) and a 0.5 s stretch of NaN positions.
    lost = (pl.col("time_s") >= 30.0) & (pl.col("time_s") < 31.0)
    nan = (pl.col("time_s") >= 50.0) & (pl.col("time_s") < 50.5)
    gappy = b.filter(~lost).with_columns(pl.when(nan).then(float("nan")).otherwise(pl.col("position"))
                                         .alias("position")).drop("row")
    gappy.write_parquet(tmp_path / "b.parquet")
    write_spike_table(tmp_path / "s.parquet", session)
    done = run_mini("import-spikes", "s.parquet", "--behaviour", "b.parquet", "--bin-size", "0.05",
                    "--time-range", f"{START_S},{START_S + DURATION_S}", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = _read(tmp_path / "x.duckdb")
    centres = START_S + np.arange(round(DURATION_S / 0.05)) * 0.05 + 0.025
    position, speed = _variable(tables, "position"), _variable(tables, "speed")
    # With 50 Hz samples the default gap is 2.5 × 20 ms: a centre is missing exactly when the samples around
    # it are further apart than that.
    times = gappy["time_s"].to_numpy()
    valid = gappy["position"].is_not_nan().to_numpy()
    tv = times[valid]
    after = np.searchsorted(tv, centres, side="right")
    span = tv[np.minimum(after, len(tv) - 1)] - tv[np.maximum(after - 1, 0)]
    covered = (after > 0) & (after < len(tv)) & (span <= 0.05 + 1e-9)
    assert np.array_equal(np.isfinite(position), covered)
    assert np.isnan(position[(centres > 30.05) & (centres < 30.95)]).all()
    assert np.isnan(position[(centres > 50.0) & (centres < 50.48)]).all()
    assert np.isfinite(speed[(centres > 50.0) & (centres < 50.48)]).all()  # speed had no NaN there
    np.testing.assert_allclose(position[covered], np.interp(centres[covered], tv, gappy["position"].to_numpy()[valid]))
    assert tables["natural_variables"].filter(pl.col("variable") == "position")["n_missing"][0] == (~covered).sum()


def test_trials_table_drop_or_keep_outside_and_trial_variables(tmp_path: Path) -> None:
    session = make_session()
    write_spike_table(tmp_path / "s.csv", session)
    session.behaviour.write_csv(tmp_path / "b.csv")
    session.trials.write_csv(tmp_path / "trials.csv")
    common = ("--behaviour", "b.csv", "--trials", "trials.csv", "--bin-size", str(BIN), "--time-range",
              f"{START_S},{START_S + DURATION_S}")
    done = run_mini("import-spikes", "s.csv", *common, "--name", "drop", "--db", "d.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = _read(tmp_path / "d.duckdb")
    n_runs = session.trials.height
    assert tables["datasets"]["n_trials"][0] == n_runs
    assert tables["datasets"]["trial_source"][0] == "column:trial"
    # Only bins whose centre lies in a run are kept; each keeps its run's label and direction.
    times = tables["examples"].sort("example_id")["time_s"].to_numpy() + BIN / 2
    which = np.searchsorted(session.trials["start"].to_numpy(), times, side="right") - 1
    assert (times < session.trials["stop"].to_numpy()[which]).all()
    assert len(times) == n_runs * round(3.0 / BIN)
    trial_label = tables["trials"].select("trial_id", "label").join(tables["examples"], on="trial_id")
    assert sorted(set(trial_label["label"].to_list()), key=int) == [str(i) for i in range(n_runs)]
    direction = _variable(tables, "direction", "category")
    assert list(direction) == session.trials["direction"].to_numpy()[which].tolist()
    # Whole trials per split.
    per_trial = tables["examples"].group_by("trial_id").agg(pl.col("split").n_unique())
    assert (per_trial["split"] == 1).all()

    done = run_mini("import-spikes", "s.csv", *common, "--outside-trials", "keep", "--name", "keep",
                    "--db", "k.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    kept = _read(tmp_path / "k.duckdb")
    assert kept["datasets"]["n_examples"][0] == round(DURATION_S / BIN)
    labels = kept["trials"]["label"].to_list()
    outside = [label for label in labels if label.startswith("outside")]
    assert len(outside) == n_runs  # a pause after each run (the last one runs to the end of the range)
    # Bins outside the runs have no direction: it is a trial-level variable and they are in no trial.
    direction_kept = _variable(kept, "direction", "category")
    assert sum(d is None for d in direction_kept) == kept["examples"].height - len(times)


def test_laps_and_runs_from_a_tracking_file(tmp_path: Path) -> None:
    session = make_session()
    times, x, y = session_pixels(session)
    # The tracker loses the animal for the last 15 s: the position sits on one pixel.
    frozen = times > START_S + DURATION_S - 15
    x, y = np.where(frozen, 522, x), np.where(frozen, 8, y)
    write_tracking(tmp_path / "t.videoPositionTracking", times, x, y)
    write_spike_table(tmp_path / "s.csv", session)
    for mode, name in (("laps", "laps"), ("runs", "runs")):
        done = run_mini("import-spikes", "s.csv", "--behaviour", "t.videoPositionTracking", "--trials", mode,
                        "--bin-size", str(BIN), "--name", name, "--db", "x.duckdb", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "tracking lost" in done.stderr
    with Store.open(tmp_path / "x.duckdb", read_only=True) as db:
        trials = {name: db.frame("SELECT t.* FROM trials t JOIN datasets USING (dataset_id) WHERE name = ? "
                                 "ORDER BY trial_id", [name]) for name in ("laps", "runs")}
        position = db.frame("SELECT e.time_s, v.value FROM natural_values v JOIN examples e USING (dataset_id, "
                            "example_id) JOIN datasets d USING (dataset_id) WHERE d.name = 'runs' AND "
                            "v.variable = 'position' ORDER BY e.time_s")
        options = json.loads(db.scalar("SELECT options FROM datasets WHERE name = 'laps'"))
    # 65 s of tracking = 16 end-to-end traversals, the first from the start (at one end); each a trial.
    n_traversals = int((DURATION_S - 15) // 4)
    assert trials["laps"].height == n_traversals == trials["runs"].height
    # Laps tile the session (runs and the pause at the end each leaves from); runs are the 3 s of running.
    assert trials["laps"]["n_examples"].median() == pytest.approx(4.0 / BIN, abs=2)
    assert trials["runs"]["n_examples"].median() == pytest.approx(3.0 / BIN * 0.7, abs=4)  # end zones are 15 %
    # Position along the principal axis, in pixels: linear in the true position (3 px, 2 px per cm).
    true_position, _, _ = trajectory(position["time_s"].to_numpy() + BIN / 2 - START_S)
    assert np.corrcoef(true_position, position["value"].to_numpy())[0, 1] > 0.999
    assert options["behaviour"][0]["n_frozen_samples"] == int(frozen.sum())
    assert options["trials"]["from"] == "laps" and options["trials"]["laps"]["with_ends"] is True


def test_events_are_counted_per_bin(tmp_path: Path) -> None:
    session = make_session()
    write_spike_table(tmp_path / "s.csv", session)
    session.behaviour.write_csv(tmp_path / "b.csv")
    events = pl.DataFrame({"time": np.r_[session.rewards, session.rewards[:5] + 0.01],
                           "event": ["reward"] * len(session.rewards) + ["lick"] * 5})
    events.write_csv(tmp_path / "e.csv")
    done = run_mini("import-spikes", "s.csv", "--behaviour", "b.csv", "--events", "e.csv", "--bin-size", "0.5",
                    "--time-range", f"{START_S},{START_S + DURATION_S}", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = _read(tmp_path / "x.duckdb")
    edges = START_S + np.arange(161) * 0.5
    reward = np.nan_to_num(_variable(tables, "reward"))
    np.testing.assert_array_equal(reward, np.histogram(session.rewards, edges)[0])
    assert np.nansum(_variable(tables, "lick")) == 5


def test_unit_filters_drop_slow_and_contaminated_units(tmp_path: Path) -> None:
    session = make_session()
    # Contaminate `speedy`: every other spike gets a partner 0.5 ms later (an ISI violation).
    doubled = np.sort(np.r_[session.trains["speedy"], session.trains["speedy"][::2] + 0.0005])
    session.trains["speedy"] = doubled
    write_spike_table(tmp_path / "s.csv", session)
    session.behaviour.write_csv(tmp_path / "b.csv")
    done = run_mini("import-spikes", "s.csv", "--behaviour", "b.csv", "--min-rate", "0.5",
                    "--max-isi-violations", "0.05", "--db", "x.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    tables = _read(tmp_path / "x.duckdb")
    assert tables["units"].sort("unit_id")["name"].to_list() == ["place20", "place40", "place60", "place80"]
    assert "below --min-rate 0.5 Hz: rare" in done.stderr and "above --max-isi-violations 0.05" in done.stderr
    metrics = tables["options"]["spikes"]["unit_metrics"]
    assert metrics["speedy"]["isi_violations"] > 0.3 and metrics["place20"]["isi_violations"] < 0.05
    assert tables["options"]["spikes"]["unit_filter"] == {"min_rate_hz": 0.5, "max_isi_violations": 0.05,
                                                          "refractory_s": 0.0015}


def test_smoothing_and_zscore_are_recorded_and_stay_within_trials(tmp_path: Path) -> None:
    session = make_session()
    write_spike_table(tmp_path / "s.csv", session)
    session.behaviour.write_csv(tmp_path / "b.csv")
    session.trials.write_csv(tmp_path / "trials.csv")
    args = ("import-spikes", "s.csv", "--behaviour", "b.csv", "--trials", "trials.csv", "--bin-size", "0.05",
            "--outside-trials", "keep")
    for name, extra in (("raw", ()), ("smooth", ("--smooth", "0.1")), ("z", ("--smooth", "0.1", "--normalize",
                                                                               "zscore"))):
        done = run_mini(*args, *extra, "--name", name, "--db", f"{name}.duckdb", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    raw, smooth, z = (_read(tmp_path / f"{n}.duckdb") for n in ("raw", "smooth", "z"))
    trial_of = raw["examples"].sort("example_id")["trial_id"].to_numpy()
    raw_m, smooth_m, z_m = _dense(raw), _dense(smooth), _dense(z)
    for trial in np.unique(trial_of):
        rows = trial_of == trial
        # A unit silent in a trial stays at 0 there, whatever the neighbouring trials hold.
        silent = raw_m[rows].sum(0) == 0
        assert (smooth_m[rows][:, silent] == 0).all()
        if rows.sum() > 1:
            moving = z_m[rows][:, ~silent & (z_m[rows].std(0) > 0)]
            np.testing.assert_allclose(moving.mean(0), 0, atol=1e-5)
            np.testing.assert_allclose(moving.std(0), 1, atol=1e-4)
    assert smooth["datasets"]["kind"][0] == "spike_counts" and z["datasets"]["kind"][0] == "activations"
    assert z["options"]["preprocess"] == {"smooth_s": 0.1, "normalize": "zscore", "within": "trials"}
    # Firing rates are the spikes' own, whatever was done to the values.
    np.testing.assert_allclose(z["units"]["firing_rate_hz"].to_numpy(), raw["units"]["firing_rate_hz"].to_numpy())
