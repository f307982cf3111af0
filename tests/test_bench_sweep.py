"""bench/sweep.py --quick runs a real local sweep and the same packs through train_run, and ends with its JSON
line: every key there, the same val FVU on both sides, and no files left behind (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_bench_quick_prints_a_json_line_with_identical_metrics(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "sweep.py"), "--quick", "--dir", str(scratch)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "sweep" and result["quick"] is True
    assert result["configurations"] == 4 and result["packs"] == 2 and result["bins"] == 3000
    assert result["sequential_s"] > 0 and result["local_s"] >= result["local_executor_s"] > 0
    # The walls are printed rounded to 2 decimals, the speedup from the unrounded ones
    assert abs(result["speedup"] - result["sequential_s"] / result["local_s"]) < 0.01 * result["speedup"] + 1e-3
    # The same settings and seed give the same model whether a sweep worker or `mini train` trained it.
    assert result["max_val_fvu_difference"] <= 1e-6
    assert result["meets_targets"]["max_val_fvu_difference"] is True
    assert result["overhead_packs"] == 2
    overhead = result["overhead_s_per_trial"]
    assert set(overhead) == {"local", "ray", "slurm"} and overhead["local"] is not None
    assert overhead["ray"] is None and overhead["slurm"] is None
    assert result["unavailable"] == {"ray": "not run (--executors)", "slurm": "not run (--executors)"}
    assert result["meets_targets"]["overhead_s_per_trial"] == {"local": overhead["local"] <= 2.0, "slurm": None}
    assert result["meets_targets"]["speedup"] == (result["speedup"] >= 1.6)
    assert result["targets"]["speedup"] == 1.6 and result["cpus"] >= 1 and "load_average_1m" in result
    assert list(scratch.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["scratch"], \
        "the bench leaves no files behind"
