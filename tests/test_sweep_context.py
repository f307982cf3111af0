"""`mini sweep --inputs --targets --history`: a swept transcoder with temporal context trains what `mini train`
with the same flags trains, its promoted run records its units and lags as a trained one does, and bad values are
refused as `mini train` refuses them, before any sweep row or folder is written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tests.app_data import copy_database
from tests.conftest import run_cli
from tests.spike_cases import assert_refused
from tests.sweep_data import folder_of, rows, sweep, trials

CONTEXT = ("--inputs", "0-11", "--targets", "12-23", "--history", "3")
"""The small recording's 24 units split in two halves, each bin's input its trial's last 3 bins."""


@pytest.fixture
def db(small_db, tmp_path) -> Path:
    return copy_database(small_db, tmp_path, "context.duckdb")


def test_a_swept_transcoder_with_history_is_the_mini_train_run_with_the_same_flags(db):
    done = sweep(db, "--dataset", "small", "--grid", "d_sae=16 k=2,3", "--epochs", "2", *CONTEXT)
    assert done.returncode == 0, done.stderr
    assert "transcoder: inputs 12 units, targets 12 units (0-11 → 12-23)" in done.stderr
    assert "--history 3:" in done.stderr  # the bins without a full history are named, as mini train names them
    stored = trials(db)
    assert len(stored) == 2 and {t["status"] for t in stored.values()} == {"finished"}
    assert rows(db, "SELECT options->>'$.history', options->>'$.inputs', options->>'$.targets' FROM sweeps") == [
        ("3", "0-11", "12-23")]

    trained = run_cli("train", "--dataset", "small", "--d-sae", "16", "--k", "2,3", "--epochs", "2", *CONTEXT,
                      "--db", str(db), cwd=db.parent, timeout=300)
    assert trained.returncode == 0, trained.stderr
    pack = stored[1]["pack_id"]
    result = folder_of(db) / "packs" / pack / "result"
    # The same weights: every decoder weight (over the 12 target units) and every per-lag encoder norm.
    swept = pl.read_parquet(result / "decoder.parquet").sort("sae_id", "feature_id", "unit_id")
    mine = rows(db, "SELECT s.instance, d.feature_id, d.unit_id, d.weight FROM decoder d JOIN saes s USING (sae_id) "
                    "WHERE s.run_id = 1 ORDER BY s.instance, d.feature_id, d.unit_id")
    assert swept.height == len(mine) == 2 * 16 * 12
    assert swept["unit_id"].to_list() == [r[2] for r in mine] and min(r[2] for r in mine) == 12
    assert np.allclose(swept["weight"].to_numpy(), [r[3] for r in mine], atol=1e-6)
    swept_lags = pl.read_parquet(result / "encoder_lags.parquet").sort("sae_id", "feature_id", "lag")
    trained_lags = rows(db, "SELECT s.instance, e.feature_id, e.lag, e.norm, e.top_unit_id FROM encoder_lags e "
                            "JOIN saes s USING (sae_id) WHERE s.run_id = 1 ORDER BY 1, 2, 3")
    assert swept_lags.height == len(trained_lags) == 2 * 16 * 3
    assert np.allclose(swept_lags["norm"].to_numpy(), [r[3] for r in trained_lags], atol=1e-6)
    assert swept_lags["top_unit_id"].to_list() == [r[4] for r in trained_lags]
    # The same QC: target FVU and the ridge baseline from the inputs, per split.
    swept_qc = pl.read_parquet(result / "qc.parquet").sort("sae_id", "split")
    trained_qc = rows(db, "SELECT s.instance, q.split, q.fvu, q.ridge_fvu FROM qc q JOIN saes s USING (sae_id) "
                          "WHERE s.run_id = 1 ORDER BY s.instance, q.split")
    assert len(trained_qc) == swept_qc.height == 6
    for swept_row, (_, split, fvu, ridge) in zip(swept_qc.to_dicts(), trained_qc, strict=True):
        assert swept_row["split"] == split and ridge is not None
        assert abs(swept_row["fvu"] - fvu) <= 1e-6 and abs(swept_row["ridge_fvu"] - ridge) <= 1e-9

    # Promoted, the trial is a run that records its units and lags as the trained run does.
    promoted = sweep(db, "promote", "1", "2")
    assert promoted.returncode == 0, promoted.stderr
    run_id = int(promoted.stdout.strip())
    units = "SELECT role, unit_id, position FROM run_units WHERE run_id = {} ORDER BY role, position"
    assert rows(db, units.format(run_id)) == rows(db, units.format(1))
    assert rows(db, f"SELECT config->>'$.history', config->>'$.inputs' FROM runs WHERE run_id = {run_id}") == [
        ("3", "0-11")]
    lags = ("SELECT e.feature_id, e.lag, e.norm, e.top_unit_id FROM encoder_lags e JOIN saes s USING (sae_id) "
            "WHERE s.run_id = {} AND s.k = 3 ORDER BY 1, 2")
    promoted_lags, trained_k3 = rows(db, lags.format(run_id)), rows(db, lags.format(1))
    assert len(promoted_lags) == 16 * 3
    assert [(f, lag, u) for f, lag, _, u in promoted_lags] == [(f, lag, u) for f, lag, _, u in trained_k3]
    assert np.allclose([r[2] for r in promoted_lags], [r[2] for r in trained_k3], atol=1e-6)


def test_bad_unit_options_are_refused_as_mini_train_refuses_them_and_write_nothing(db, capsys):
    grid = ("--dataset", "small", "--grid", "d_sae=16 k=2")
    cases = [
        (("--inputs", "0-5"), ("--inputs without --targets",)),
        (("--targets", "0-5"), ("--targets without --inputs",)),
        (("--history", "0"), ("--history 0",)),
        (("--history", "65"), ("--history 65",)),
        (("--inputs", "5-2", "--targets", "0"), ("--inputs 5-2", "bad range")),
        (("--inputs", "0-99", "--targets", "0"), ("--inputs 0-99", "out of range")),
        (("--inputs", "0", "--targets", "area=CA1"), ("--targets area=CA1", "no attribute 'area'")),
        (("--inputs", "0", "--targets", "nobody"), ("--targets nobody", "no unit named 'nobody'")),
    ]
    from tui.cli import main

    def refused(command: str, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        extra = ("--epochs", "1", "--d-sae", "16", "--k", "2") if command == "train" else ()
        status = main([command, "--dataset", "small", *extra, *args, "--db", str(db)] if command == "train"
                      else ["sweep", *grid, *args, "--db", str(db)])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, captured.out, captured.err)

    for i, (args, words) in enumerate(cases):
        swept = sweep(db, *grid, *args) if i in (0, 5) else refused("sweep", args)  # some as a person runs it
        assert_refused(swept, words)
        trained = refused("train", args)
        assert_refused(trained, words)
        assert swept.stderr == trained.stderr  # the very same message
    assert_refused(sweep(db, "--resume", "1", "--history", "2"), ("--resume", "drop --history"))
    assert rows(db, "SELECT count(*) FROM sweeps")[0][0] == 0 and rows(db, "SELECT count(*) FROM runs")[0][0] == 0
    assert not folder_of(db).parent.exists()
