"""Temporal context (`mini train --history L`): lags within a trial only, L = 1 is the plain SAE, bad L refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.sae.history import history_examples, trial_positions
from sample_data import SampleConfig, generate
from tests.conftest import run_cli


def _sql(db: Path, query: str, cwd: Path) -> list[dict]:
    result = run_cli("sql", "--db", str(db), "--format", "json", query, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("history_small")
    generate(SampleConfig(n_bins=3000, n_units=24)).write(folder / "data")
    db = folder / "small.duckdb"
    result = run_cli("import", "data/counts.npz", "--meta", "data/metadata.parquet", "--name", "small",
                     "--db", str(db), cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder, db


def test_no_example_reads_across_a_trial_boundary():
    # Two trials of three bins, then one of two; every bin's counts are its own index, so a lag that crossed
    # into the previous trial would show that trial's bin.
    trials = np.array([4, 4, 4, 9, 9, 9, 2, 2])
    counts = np.repeat(np.arange(8, dtype=np.float32)[:, None], 3, axis=1) * np.array([1, 10, 100], np.float32)
    fill = np.array([-1.0, -2.0], np.float32)
    built = history_examples(counts, np.array([0, 1]), np.array([2]), trials, 3, fill)
    assert trial_positions(trials).tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    assert built.complete.tolist() == [False, False, True, False, False, True, False, False]
    lag0, lag1, lag2, target = (built.examples[:, 0:2], built.examples[:, 2:4], built.examples[:, 4:6],
                                built.examples[:, 6])
    assert lag0[:, 0].tolist() == list(range(8)) and target.tolist() == [100.0 * t for t in range(8)]
    assert lag1[:, 0].tolist() == [-1, 0, 1, -1, 3, 4, -1, 6]  # bin 3 starts trial 9: not bin 2 of trial 4
    assert lag2[:, 1].tolist() == [-2, -2, 0, -2, -2, 30, -2, -2]
    # The same bins as one trial would read across: the boundary is what changes them.
    across = history_examples(counts, np.array([0, 1]), np.array([2]), np.zeros(8), 3, fill)
    assert across.examples[3, 2] == 2 and across.complete.sum() == 6


@pytest.mark.parametrize("history", ["0", "-2", "65", "1e9", "two"])
def test_bad_history_is_refused_and_nothing_written(small, history):
    folder, db = small
    result = run_cli("train", "--dataset", "small", "--epochs", "1", "--history", history, "--db", str(db),
                     cwd=folder)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--history" in lines[0], result.stderr
    assert _sql(db, "SELECT count(*) AS n FROM runs", folder) == [{"n": 0}]


def test_history_one_is_the_plain_sae(small, tmp_path):
    folder, db = small
    decoders = []
    for extra in ([], ["--history", "1"]):
        copy = tmp_path / f"copy{len(decoders)}.duckdb"
        copy.write_bytes(db.read_bytes())
        result = run_cli("train", "--dataset", "small", "--d-sae", "32", "--k", "3", "--epochs", "2", *extra,
                         "--db", str(copy), cwd=folder)
        assert result.returncode == 0, result.stderr
        decoders.append(_sql(copy, "SELECT feature_id, unit_id, weight FROM decoder ORDER BY ALL", folder))
        assert _sql(copy, "SELECT count(*) AS n FROM run_units", folder) == [{"n": 0}]
        assert _sql(copy, "SELECT count(*) AS n FROM encoder_lags", folder) == [{"n": 0}]
        info = run_cli("info", "--db", str(copy), cwd=folder)
        assert info.returncode == 0 and "history:" not in info.stdout and "transcoder:" not in info.stdout
    assert decoders[0] == decoders[1] and len(decoders[0]) == 32 * 24


def test_history_trains_on_complete_bins_and_reports_each_lag(small, tmp_path):
    folder, db = small
    copy = tmp_path / "h.duckdb"
    copy.write_bytes(db.read_bytes())
    result = run_cli("train", "--dataset", "small", "--d-sae", "32", "--k", "3", "--epochs", "2", "--history", "3",
                     "--inputs", "0-11", "--targets", "12-23", "--db", str(copy), cwd=folder)
    assert result.returncode == 0, result.stderr
    trials = _sql(copy, "SELECT count(DISTINCT trial_id) AS n FROM examples", folder)[0]["n"]
    assert f"--history 3: {2 * trials:,} bins (the first 2 of each trial)" in result.stderr
    # QC scores the bins with a whole history only: each split loses its trials' first two bins.
    expected = _sql(copy, "SELECT split, count(*) AS n FROM (SELECT split, row_number() OVER (PARTITION BY trial_id "
                          "ORDER BY example_id) AS position FROM examples) WHERE position > 2 GROUP BY split", folder)
    scored = _sql(copy, "SELECT split, n_examples AS n, ridge_fvu FROM qc", folder)
    assert {r["split"]: r["n"] for r in scored} == {r["split"]: r["n"] for r in expected}
    assert all(r["ridge_fvu"] is not None for r in scored)
    lags = _sql(copy, "SELECT lag, count(*) AS n, min(top_unit_id) AS lo, max(top_unit_id) AS hi FROM encoder_lags "
                      "GROUP BY lag ORDER BY lag", folder)
    assert [r["lag"] for r in lags] == [0, 1, 2] and all(r["n"] == 32 and 0 <= r["lo"] <= r["hi"] <= 11 for r in lags)
    # Every bin still has its code (ranking and validation read every bin).
    padded = _sql(copy, "SELECT count(DISTINCT a.example_id) AS n FROM activations a JOIN (SELECT example_id, "
                        "row_number() OVER (PARTITION BY trial_id ORDER BY example_id) AS position FROM examples) e "
                        "USING (example_id) WHERE e.position <= 2", folder)
    assert padded[0]["n"] > 0
    config = _sql(copy, "SELECT config FROM runs", folder)[0]["config"]
    assert json.loads(config)["history"] == 3
    # `mini info` says what the run read and reconstructed, in the validation report's words.
    info = run_cli("info", "--db", str(copy), cwd=folder)
    assert info.returncode == 0, info.stderr
    assert "run 1: transcoder: inputs 12 units (0-11), targets 12 units (12-23)\n" in info.stdout
    assert "run 1: history: 3 bins\n" in info.stdout
    # --max-shuffles 1000: what is checked is the ranking of a history run and its report, not p-values far out
    ranked = run_cli("rank", "--run", "1", "--max-shuffles", "1000", "--db", str(copy), cwd=folder, timeout=600)
    assert ranked.returncode == 0, ranked.stderr
    report = run_cli("report", "--run", "1", "--db", str(copy), "--out", str(tmp_path / "r.md"), cwd=folder)
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.md").read_text()
    assert "Temporal context: the input of a bin is its last 3 bins of the same trial" in text
    assert "| rank | feature_id | lag 0 | lag 1 | lag 2 |" in text
    assert "Transcoder: inputs 12 units (0-11), targets 12 units (12-23). The code" in text


def test_history_without_a_selection_is_an_sae_with_context_and_keeps_pca(small, tmp_path):
    folder, db = small
    copy = tmp_path / "c.duckdb"
    copy.write_bytes(db.read_bytes())
    result = run_cli("train", "--dataset", "small", "--d-sae", "32", "--k", "3", "--epochs", "2", "--history", "2",
                     "--db", str(copy), cwd=folder)
    assert result.returncode == 0, result.stderr
    assert "transcoder: inputs 24 units, targets 24 units (all → all, 2 bins of history)" in result.stderr
    qc = _sql(copy, "SELECT split, pca_fvu, ridge_fvu, fvu FROM qc ORDER BY split", folder)
    # Every target is an input at lag 0: the ridge copies it (near 0), so PCA of the targets stays the baseline.
    assert all(r["pca_fvu"] is not None and r["ridge_fvu"] < 0.05 and r["fvu"] is not None for r in qc), qc
    assert _sql(copy, "SELECT count(*) AS n FROM decoder", folder) == [{"n": 32 * 24}]
    # Not a transcoder to the person who trained it (no --inputs): `mini info` names its history alone.
    info = run_cli("info", "--db", str(copy), cwd=folder)
    assert info.returncode == 0, info.stderr
    assert "run 1: history: 2 bins\n" in info.stdout and "transcoder:" not in info.stdout
