"""bench/sql.py runs end to end on a small query and ends with its JSON line (no speed asserted: how quickly
a large result appears is the bench's figure, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sql_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sql.py"), "--rows", "2000", "--repeat", "2", "--dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "sql" and result["rows"] == 2000 and result["repeat"] == 2
    assert 0 < result["result_s_median"] <= result["result_s_p95"]
    assert result["meets_target"] == (result["result_s_p95"] <= result["target_result_s_p95"])
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"


def test_sql_bench_refuses_a_count_below_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "sql.py"), "--rows", "0"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--rows and --repeat must be at least 1" in done.stderr
    assert list(tmp_path.iterdir()) == []
