"""bench/ingest.py runs end to end on a small table and ends with its JSON line (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KEYS = {
    "bench", "rows", "store_rows_per_s", "parquet_rows_per_s", "ratio_store_to_parquet",
    "store_bytes", "parquet_bytes", "target_ratio", "meets_target",
}


def test_ingest_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "ingest.py"), "--rows", "200000", "--repeat", "1",
         "--dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not KEYS - result.keys(), f"missing keys: {KEYS - result.keys()}"
    assert result["bench"] == "ingest"
    assert result["rows"] == 200_000
    assert result["store_rows_per_s"] > 0 and result["parquet_rows_per_s"] > 0
    assert result["ratio_store_to_parquet"] > 0
    assert result["store_bytes"] > 0 and result["parquet_bytes"] > 0
    assert result["target_ratio"] == 0.8
    assert isinstance(result["meets_target"], bool)
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
