"""bench/validate.py's scale part runs end to end at a small size and ends with its JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_validate_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "validate.py"), "--skip-science", "--examples", "20000",
         "--labels", "6", "--baseline", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    scale = result["scale"]
    assert result["bench"] == "validate" and scale["examples"] == 20_000
    assert 1 <= scale["pairings"] <= 6 and scale["baseline_pairings"] == 2
    assert scale["mini_cpu_seconds_per_pairing"] > 0 and scale["baseline_cpu_seconds_per_pairing"] > 0
    assert scale["speedup_vs_baseline_per_pairing"] > 0
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
