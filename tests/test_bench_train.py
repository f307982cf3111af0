"""bench/train.py runs end to end at a small size with mini's trainers and ends with its JSON line (no speed
asserted; the peers are not project dependencies, so they are absent here and left out of the line)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train.py"), "--epochs", "1", "--sweep", "2", "--cancel-repeat", "2",
         "--train-rows", "3072", "--device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "train" and result["device"] == "cpu" and result["epochs"] == 1
    assert result["examples"] == 3072 and result["warm_up_examples_each"] == 8 * 1024
    for name in ("mini", "mini_linear_output"):
        quality = result[name]
        assert quality["examples_per_s"] > 0, name
        assert quality["fvu"] > 0 and 0 <= quality["dead_fraction"] <= 1 and -1 <= quality["mmcs"] <= 1, name
    assert result["mini"]["fraction_of_encoder_roofline"] > 0
    assert result["sweep"]["saes"] == 2 and result["sweep"]["sae_examples_per_s"] > 0
    cancel = result["cancel"]
    assert cancel["repeat"] == 2 and 0 < cancel["seconds_median"] <= cancel["seconds_max"]
    assert cancel["meets_target"] == (cancel["seconds_max"] <= cancel["target_seconds_max"])
    for peer in ("sparsify", "saelens"):
        assert (peer in result) == (f"speedup_vs_{peer}" in result), peer
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
