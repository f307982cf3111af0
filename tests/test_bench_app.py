"""bench/app.py runs end to end on a small run and ends with its JSON line (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_app_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "app.py"), "--examples", "5000", "--features", "64", "--k", "4",
         "--units", "10", "--repeat", "1", "--steps", "4", "--labels", "3", "--reads", "3", "--ranking-keys", "3",
         "--dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "app" and result["examples"] == 5000 and result["features"] == 64
    assert result["activation_rows"] > 0
    for key in ("start_s", "next_feature_ms", "next_feature_cold_ms", "label_commit_ms", "label_commit_busy_ms",
                "key_ms_while_ranking", "feature_read_ordered_ms", "feature_read_scan_ms"):
        assert 0 < result[f"{key}_median"] <= result[f"{key}_p95"], key
    targets = {"start_s_p95", "next_feature_ms_p95", "next_feature_cold_ms_p95", "label_commit_ms_p95",
               "label_commit_busy_ms_p95", "key_ms_while_ranking_p95"}
    assert set(result["meets_targets"]) == set(result["targets"]) == targets
    assert all(result["meets_targets"][key] == (result[key] <= result["targets"][key]) for key in targets)
    # The app really ranked the run while the keys were timed: the first key at least was pressed while it
    # ran, and it then either finished (its whole ranking stored) or was cancelled (nothing of it stored).
    assert 1 <= result["repeats"]["key_while_ranking"] <= 3
    assert result["ranking_status"] in ("ranked", "cancelled") and result["ranking_tables_whole"] is True
    assert result["ranking_s"] > 0 and result["ranking_cancel_s"] >= 0
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
