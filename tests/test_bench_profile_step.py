"""bench/profile_step.py runs the Trainer's step end to end with its phases timed and ends with its JSON line (no
speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from engine.sae.screened_selection import SCREEN_MIN_ELEMENTS, native_bf16_matmul

ROOT = Path(__file__).resolve().parents[1]


def test_profile_step_prints_every_phase_and_leaves_no_files(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "profile_step.py"), "--saes", "4", "--steps", "3"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "profile_step" and result["saes"] == 4 and result["steps"] == 3
    assert result["step_us"] > 0 and result["examples_per_s"] > 0 and result["aten_calls_per_step"] > 50
    phases = result["phase_us"]
    assert set(phases) == {"encoder matmul", "selection", "screened selection", "entries", "forward rest", "auxk",
                           "backward", "decoder-grad projection", "adam", "after-step bookkeeping"}
    assert all(phases[name] > 0 for name in ("backward", "adam"))
    # After the warm-up every step's selection is screened where this CPU has hardware bf16 (four SAEs of the bench's
    # shape are the smallest stack the screen takes), dense elsewhere.
    assert SCREEN_MIN_ELEMENTS <= 4 * 1024 * 512
    if native_bf16_matmul():
        assert phases["screened selection"] > 0 and phases["encoder matmul"] == phases["selection"] == 0
    else:
        assert phases["screened selection"] == 0 and phases["encoder matmul"] > 0 and phases["selection"] > 0
    assert sum(phases.values()) <= result["step_us"] * 1.05  # the phases are parts of the step
    assert list(tmp_path.iterdir()) == [], "the bench leaves no files behind"
