"""`mini report` draws the split tuning and the peri-event histogram of the features it reports (the app's
database: the sample recording, a ranked run with six validated labels)."""

from __future__ import annotations

import re
from pathlib import Path

from store import Store
from tests.conftest import run_cli


def test_report_text_holds_split_tuning_and_peri_event_histograms(app_db: Path, tmp_path: Path) -> None:
    result = run_cli("report", "--run", "1", "--out", "report.md", "--db", str(app_db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    top = text[text.index("## Tuning of the top features"):text.index("## Labelled features")]
    with Store.open(app_db, read_only=True) as db:
        first = db.scalar("SELECT feature_id FROM rankings WHERE sae_id = 1 AND rank = 1")
        levels = {r[0]: r[1] for r in db.con.execute("SELECT variable, n_levels FROM natural_variables").fetchall()}
    assert f"### SAE 1 · rank 1 · feature {first}:" in top
    # A continuous variable by a categorical one: one sparkline row per level, then mean ± SEM per bin.
    split = re.search(r"^(\w+) by (\w+) \(separation [0-9.]+; train \+ val, ranked bins\):$", top, re.M)
    assert split is not None and split[2] in levels and levels[split[2]] <= 8
    assert re.search(r"^  \[[^)]+\)\s+[0-9.]+ ± [0-9.]+", top, re.M)
    assert "around reward (" in top and "peak at" in top  # the sample's per-bin event column
    # Each validation section carries them too.
    validations = text[text.index("## Validations"):]
    assert validations.count("Split tuning (mean activation") >= 6
