"""bench/train.py runs end to end at a small size with mini's trainers and ends with its JSON line (no speed
asserted; the peers are not project dependencies, so they are absent here and left out of the line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_train_bench_prints_a_json_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train.py"), "--epochs", "1", "--sweep", "2", "--cancel-repeat", "2", "--repeat", "2",
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
    # Two rounds: each trainer's runs are listed, and the figure that counts is their median.
    assert result["repeat"] == 2
    for name in ("mini", "mini_linear_output"):
        runs = result[name]["examples_per_s_runs"]
        assert len(runs) == 2 and min(runs) - 1 <= result[name]["examples_per_s"] <= max(runs) + 1, name
    assert result["sweep"]["saes"] == 2 and result["sweep"]["sae_examples_per_s"] > 0
    assert len(result["sweep"]["seconds_runs"]) == 2
    cancel = result["cancel"]
    assert cancel["repeat"] == 2 and 0 < cancel["seconds_median"] <= cancel["seconds_max"]
    assert cancel["meets_target"] == (cancel["seconds_max"] <= cancel["target_seconds_max"])
    for peer in ("sparsify", "saelens"):
        assert (peer in result) == (f"speedup_vs_{peer}" in result), peer
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"


def test_train_bench_takes_a_generated_shape_width_batch_and_precision(tmp_path: Path) -> None:
    """The options bench/gpu.sh uses for its target shape, at a CPU-sized version of it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "train.py"), "--epochs", "1", "--sweep", "0", "--cancel-repeat", "0", "--repeat", "1",
         "--d-in", "64", "--examples", "2048", "--d-sae", "128", "--batch", "256", "--precision", "bf16",
         "--device", "cpu"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["d_in"], result["d_sae"], result["batch"], result["examples"]) == (64, 128, 256, 2048)
    assert result["precision"] == "bf16" and result["matmul_peak_dtype"] == "float32"
    assert result["mini"]["examples_per_s"] > 0 and 0 < result["mini"]["fvu"] < 1.5
    # Rounded to 3 decimals, a tiny matmul's fraction of the roofline can print as 0.0 on a busy machine.
    assert result["mini"]["fraction_of_encoder_roofline"] >= 0 and result["mini"]["encoder_gflops"] >= 0
    assert "sweep" not in result and "cancel" not in result
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--d-in", "-1", "--d-in -1: must be from 0"),
    ("--d-sae", "0", "--d-sae 0: must be from 1"),
    ("--batch", "0", "--batch 0: must be from 1"),
    ("--precision", "fp8", "invalid choice: 'fp8'"),
    ("--repeat", "0", "--repeat 0: must be from 1 to 20"),
])
def test_train_bench_refuses_bad_shapes_in_one_line(tmp_path: Path, option: str, value: str, words: str) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "train.py"), option, value, "--device", "cpu"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert done.stdout == ""


def test_gpu_script_parses_and_stops_in_one_line_without_a_gpu(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu.sh")]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible: bench/gpu.sh would run the whole check")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh")], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("bench/gpu.sh: error: no CUDA GPU is visible to PyTorch here")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not (tmp_path / "out").exists(), "nothing is written before the check"
