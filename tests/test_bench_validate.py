"""bench/validate.py's scale part runs end to end at a small size and ends with its JSON line: mini and the
scikit-learn way (shared per predicate and unshared) on the same labels, and their figures agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPARED = {"threshold", "mcc", "mcc_ci_low", "p_value", "decode_signature", "decode_all", "decode_feature",
            "decode_random_p95", "signature_over_all"}


def test_validate_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "validate.py"), "--skip-science", "--examples", "6000",
         "--labels", "4", "--baseline", "2", "--max-shuffles", "1000", "--max-draws", "20"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    scale = result["scale"]
    assert result["bench"] == "validate" and scale["examples"] == 6_000
    assert 1 <= scale["pairings"] <= 4 and scale["compared_pairings"] == 2 and scale["blas_threads"] == 1
    assert 1 <= scale["compared_predicates"] <= 2
    for key in ("mini_cpu_seconds_per_pairing", "mini_compared_cpu_seconds_per_pairing",
                "sklearn_shared_cpu_seconds_per_pairing", "sklearn_unshared_cpu_seconds_per_pairing",
                "speedup_vs_sklearn_shared", "speedup_vs_sklearn_unshared"):
        assert scale[key] > 0, key
    for way in ("shared", "unshared"):  # each ratio is the baseline's CPU over mini's, on the same pairings
        ratio = scale[f"sklearn_{way}_cpu_seconds_per_pairing"] / scale["mini_compared_cpu_seconds_per_pairing"]
        assert abs(scale[f"speedup_vs_sklearn_{way}"] - ratio) <= 0.02 * ratio + 0.01, way
    assert scale["sklearn_shared_equals_unshared"] is True
    gaps = scale["sklearn_max_abs_difference_from_mini"]
    assert set(gaps) == COMPARED
    # mini's own functions on the same rows on both sides: exactly equal; decoders: the same models and
    # penalty grids, different solvers' paths (mini warm-starts along the grid), so equal to a few 0.001.
    assert all(gaps[name] == 0 for name in ("threshold", "mcc", "mcc_ci_low", "p_value")), gaps
    assert all(gaps[name] <= 0.02 for name in COMPARED), gaps
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
