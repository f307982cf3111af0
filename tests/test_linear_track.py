"""The real recording: nelpy's linear-track session (rat hippocampus, 31 sorted units) imported in one
command from its MATLAB spike file and its video tracking file, trained and ranked: the top features
are place fields.

The files are read where they are (`shared/data/` beside the project, never copied in). Without them
these tests skip, saying where they looked, and fail under CI (CI=true), where shared/ is always there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from spike_cases import run_mini

from store import Store
from tests.conftest import shared_file

RECORDING = Path("shared", "data", "nelpy-example-data", "linear-track")


def find_recording() -> Path:
    """`shared/data/…/linear-track` in the project root or any folder above it (../shared/data/ in a checkout)."""
    return shared_file(RECORDING / "spikes.mat").parent


@pytest.fixture(scope="module")
def ranked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("linear_track")
    data = find_recording()
    steps = [
        ("import-spikes", str(data / "spikes.mat"), "--behaviour", str(data / "trajectory.videoPositionTracking"),
         "--trials", "runs", "--bin-size", "0.1", "--smooth", "0.1", "--name", "linear-track"),
        # the defaults a user gets (settings chosen from the recording, early stopping): what the bench runs
        ("train", "--dataset", "linear-track", "--instances", "2", "--device", "cpu"),
        ("rank", "--run", "1", "--top", "10"),
    ]
    for step in steps:
        done = run_mini(*step, "--db", "lt.duckdb", cwd=folder, timeout=600)
        assert done.returncode == 0, done.stderr
        print(done.stdout)  # the top features, for `pytest -s`
    return folder / "lt.duckdb"


def test_the_recording_imports_with_position_and_speed(ranked: Path) -> None:
    with Store.open(ranked, read_only=True) as db:
        ds = db.frame("SELECT * FROM datasets").row(0, named=True)
        kinds = dict(db.frame("SELECT variable, kind FROM natural_variables").iter_rows())
        position = db.frame("SELECT value FROM natural_values WHERE variable = 'position'")["value"].to_numpy()
        speed = db.frame("SELECT value FROM natural_values WHERE variable = 'speed'")["value"].to_numpy()
        splits = db.frame("SELECT split, count(DISTINCT trial_id) AS n FROM examples GROUP BY split")
    options = json.loads(ds["options"])
    # 37 unit structs in the file, 6 of them without a spike: 31 units, as the data's README says.
    assert options["spikes"]["n_units_read"] == 37 and ds["n_units"] == 31
    assert kinds == {"position": "continuous", "speed": "continuous", "direction": "categorical"}
    # The tracking's clock is the spikes' (30 kHz ticks): the runs lie inside the spike file's epoch, and
    # the 16-minute rest with the position frozen on one pixel is tracking lost, not 16 minutes at a place.
    assert options["behaviour"][0]["n_frozen_samples"] > 50_000
    start, stop = options["binning"]["time_range"]
    assert (start, stop) == pytest.approx((4396.9975, 6365.2707))
    # Runs: dozens of end-to-end traversals, each a trial, all three splits used.
    assert 30 <= ds["n_trials"] <= 80 and set(splits["split"]) == {"train", "val", "test"}
    track = position.max() - position.min()
    assert 300 < track < 500  # pixels along the track's principal axis
    assert np.median(speed) > 20  # px/s: the bins kept are the running ones (the whole session's median is 14)


def test_the_top_features_are_place_fields(ranked: Path) -> None:
    with Store.open(ranked, read_only=True) as db:
        top = db.frame("SELECT rank, feature_id, suggestion FROM rankings WHERE sae_id = 1 ORDER BY rank LIMIT 10")
        suggestions = db.frame(
            "SELECT s.feature_id, s.position, s.variable, s.predicate, s.low, s.high, s.q_value FROM suggestions s "
            "JOIN (SELECT feature_id FROM rankings WHERE sae_id = 1 AND rank <= 10) USING (feature_id) "
            "WHERE s.sae_id = 1 AND s.position <= 3")
        curves = db.frame("SELECT feature_id, bin, mean FROM tuning_curves WHERE sae_id = 1 AND variable = "
                          "'position' ORDER BY feature_id, bin")
        position = db.frame("SELECT value FROM natural_values WHERE variable = 'position'")["value"].to_numpy()

    def share(low: float, high: float) -> float:  # of the running bins, the share inside [low, high]
        return float(np.mean((position >= low) & (position <= high)))

    # a directional place field is a conjunction `position in [a, b) and direction = …`: its range is in the text
    field = pl.col("predicate").str.extract_groups(r"^position in \[([^,]+), ([^)]+)\)")
    suggestions = suggestions.with_columns(
        pl.coalesce("low", field.struct.field("1").cast(pl.Float64)).alias("low"),
        pl.coalesce("high", field.struct.field("2").cast(pl.Float64)).alias("high"))
    significant = suggestions.filter(pl.col("variable").is_in(["position", "position and direction"])
                                     & (pl.col("q_value") < 0.05))
    fields = significant.filter(pl.Series([share(lo, hi) < 0.5 for lo, hi in significant.select("low", "high").rows()],
                                          dtype=pl.Boolean))
    first = fields.filter(pl.col("position") == 1)
    # Most of the ten best features are first of all a place (alone or in one running direction): a
    # significant range (q < 0.05) of the track where the animal spends under half of its running time.
    assert first.height >= 5, top
    # Nearly all of them have such a field among their first three suggestions (the others' first is the run
    # direction: hippocampal place fields on a linear track are directional).
    assert fields["feature_id"].n_unique() >= 7, top
    # Not one field found over and over: at least two places that do not overlap.
    ranges = sorted(set(zip(first["low"].to_list(), first["high"].to_list(), strict=True)))
    assert any(b_low >= a_high for a_low, a_high in ranges for b_low, _ in ranges), ranges
    # A place field is a peak: the feature's mean activation in its best position bin is well above its mean.
    for feature_id in first["feature_id"].to_list():
        mean = curves.filter(pl.col("feature_id") == feature_id)["mean"].to_numpy()
        assert mean.max() > 2 * mean.mean(), (feature_id, mean)
