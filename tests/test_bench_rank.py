"""bench/rank.py runs both parts end to end at a small size and ends with its JSON line (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rank_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rank.py"), "--epochs", "1", "--bins", "8000", "--examples", "4000",
         "--features", "64", "--max-shuffles", "1000"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "rank"
    recovery, scale = result["recovery"], result["scale"]
    assert recovery["planted"] == 15 and recovery["epochs"] == 1 and recovery["bins"] == 8000
    assert recovery["max_shuffles"] == 1000
    assert len(recovery["rank_of_each"]) == 15
    found = [rank for rank in recovery["rank_of_each"].values() if rank is not None]
    assert recovery["recovered_in_top30"] == len(found) and all(1 <= rank <= 30 for rank in found)
    assert recovery["fraction"] == round(len(found) / 15, 3)
    assert recovery["distractor_suggestions_q_below_0_05"] >= 0 and recovery["pipeline_seconds"] > 0
    assert scale["examples"] == 4000 and scale["features"] == 64 and scale["variables"] == 10
    assert 0 < scale["nonzeros"] <= 4000 * 8
    for key in ("associations_seconds", "tuning_curves_seconds", "mis_seconds"):
        assert scale[key] >= 0, key
    assert scale["total_seconds"] > 0 and scale["meets_target"] == (scale["total_seconds"] < scale["target_seconds"])
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
