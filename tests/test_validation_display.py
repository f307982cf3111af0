"""`mini validate` and `mini report` say both verdicts, the attempt and the trials behind each interval, and
the report lists every attempt of the run (the real CLI in a subprocess, on copies of the app database)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from engine.validation.validation_summary import counts_line, verdict_counts
from store import Store
from tests.app_data import split_verdicts
from tests.conftest import run_cli


def test_validate_prints_both_counts_and_a_table_of_both_verdicts(app_db: Path, tmp_path: Path) -> None:
    # --max-draws 20: what is printed is checked against what is stored, whatever the verdicts are
    result = run_cli("validate", "--run", "1", "--jobs", "1", "--max-draws", "20", "--db", str(app_db),
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    with Store.open(app_db, read_only=True) as db:
        latest = db.frame("SELECT * FROM current_validations ORDER BY feature_id").to_dicts()
        family = db.con.execute("SELECT count(DISTINCT (label_id, where_sql, around)) FROM validations"
                                " WHERE testable").fetchone()[0]
    counts = verdict_counts(latest)
    line = next(line for line in result.stderr.splitlines() if re.match(r"validate: \d+ labels?, \d+ testable", line))
    assert line.startswith(f"validate: 6 labels, 6 testable: {counts.n_generalise} generalise, "
                           f"{counts.n_validated} also signature-specific (validated)"), line
    assert f"q over {family} tests (every attempt of the run)" in line
    if counts.n_duplicates:
        assert f"{counts.n_duplicates} weaker duplicate" in line
    header, _rule, *rows, total = result.stdout.splitlines()
    assert header.split()[:4] == ["SAE", "feature", "label", "attempt"]
    assert "generalises  signature specific  necessary (drop, p)  remark" in header and total == "(6 rows)"
    for row in latest:
        shown = next(r for r in rows if re.match(rf"\s*1\s+{row['feature_id']}\s", r))
        marks = re.findall(r"[✓✗]", shown)
        # Both verdicts, then the necessity figure (causal ablation), a third mark that never changes them.
        assert marks == ["✓" if row["generalises"] else "✗", "✓" if row["signature_specific"] else "✗",
                         "✓" if row["necessary"] else "✗"], shown
        assert f"{row['necessity_drop']:.3f} (p " in shown
        assert f"{row['mcc']:.2f} [{row['mcc_ci_low']:.2f}, {row['mcc_ci_high']:.2f}]" in shown
        assert f"{row['n_test_trials']} test trials" in shown
        assert ("weaker duplicate of SAE 1 feature" in shown) == (row["duplicate_of"] is not None)


def _section(text: str, heading: str) -> str:
    """From a heading to the next heading of the same or a higher level."""
    start = text.index(heading)
    body = start + len(heading)
    end = re.search(rf"^#{{2,{len(heading.split()[0])}}} ", text[body:], flags=re.M)
    return text[start: body + end.start()] if end else text[start:]


def test_report_says_both_verdicts_groups_duplicates_and_lists_every_attempt(app_db: Path, tmp_path: Path) -> None:
    split = split_verdicts(app_db)
    result = run_cli("report", "--run", "1", "--out", "report.md", "--db", str(app_db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "7 validation attempts" in result.stdout
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Validations"):]
    with Store.open(app_db, read_only=True) as db:
        latest = db.frame("SELECT v.* FROM current_validations v JOIN current_labels c USING (label_id)").to_dicts()
    assert f"**{counts_line(verdict_counts(latest))}**" in section
    assert "2 of 6 testable labels generalise; 1 of them is also signature-specific" in section

    general = _section(section, f"### SAE 1 · feature {split.general}: condition = 2")
    assert "✅ **generalises** · ❌ **signature not specific** · attempt 2" in general
    assert "over 24 test trials. p < 0.005 (199 draws of the ranking null), q ≤ 0.012" in general
    assert "tuned on random subsets of this size" in general
    # The weaker duplicate right under the label it repeats, and said so.
    duplicate = f"#### SAE 1 · feature {split.duplicate}: condition = 2"
    assert duplicate in general  # the next heading after the stronger label's section is the duplicate's
    assert f"↳ Weaker duplicate of SAE 1 feature {split.general} (MCC 0.62)" in _section(section, duplicate)
    both = _section(section, f"### SAE 1 · feature {split.both}:")
    assert "✅ **generalises** · ✅ **signature-specific** · attempt 1" in both
    assert "over 6 test trials (too few for a reliable interval)" in both

    attempts = _section(section, "### Every attempt")
    assert "7 attempts in the q-value family" in attempts
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in attempts.splitlines()
            if line.startswith(f"| 1 | {split.general} |")]
    # The failed first attempt (on another epoch) stays, beside the second.
    assert [(r[3], r[4], r[6], r[7], r[12], r[13]) for r in rows] == [
        ("1", "speed > 2", "no", "yes", "✗", "✗"), ("2", "all bins", "yes", "yes", "✓", "✗")]
    with (tmp_path / "report_tables" / "validations.csv").open() as handle:
        exported = list(csv.DictReader(handle))
    assert len(exported) == 7
    assert sorted(r["attempt"] for r in exported if r["feature_id"] == str(split.general)) == ["1", "2"]
