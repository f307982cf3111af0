"""Quality flags where a person reads them outside the app: `mini train`'s output, `mini info` and the
report, on a recording whose one loud unit holds most of the variance, imported and trained through
the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from store import Store
from store.quality import flag_line
from store.runs import set_run_status, start_run
from tests.app_data import LOUD_UNIT, write_flagged_recording
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def flagged(tmp_path_factory) -> tuple[Path, str]:
    """The database after `mini import` and `mini train` (64 latents on 8 units, 2 epochs: many stay
    dead on val), and what `mini train` printed on stderr."""
    folder = tmp_path_factory.mktemp("flagged")
    counts, meta = write_flagged_recording(folder / "data")
    imported = run_cli("import", str(counts), "--meta", str(meta), "--db", "f.duckdb", cwd=folder)
    assert imported.returncode == 0, imported.stderr
    trained = run_cli("train", "--dataset", "loud", "--d-sae", "64", "--k", "2", "--epochs", "2",
                      "--db", "f.duckdb", cwd=folder)
    assert trained.returncode == 0, trained.stderr
    return folder / "f.duckdb", trained.stderr


@pytest.fixture
def db_path(flagged, tmp_path) -> Path:
    return Path(shutil.copy(flagged[0], tmp_path / "f.duckdb"))


def stored(db_path: Path, where: str) -> list[dict]:
    result = run_cli("sql", "--db", str(db_path), "--format", "json",
                     f"SELECT * FROM quality_flags WHERE {where} ORDER BY sae_id, flag, split", cwd=db_path.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_train_prints_each_stored_flag_with_what_to_try(flagged) -> None:
    db_path, stderr = flagged
    run = stored(db_path, "run_id = 1")
    assert "dead_on_val" in {row["flag"] for row in run}  # 64 latents for 8 units: most stay silent on val
    printed = [line for line in stderr.splitlines() if line.startswith("flag: ")]
    assert printed == [f"flag: SAE 1: {row['message']} — try: {row['suggestion']}" for row in run]


def test_info_prints_the_import_flags_and_each_runs_flags_under_the_table(db_path, cli) -> None:
    with Store.open(db_path) as db:  # a run that failed before training has no flags
        set_run_status(db, start_run(db, 1, {"dataset": "loud"}, "cpu"), "failed", "out of memory")
    result = cli("info", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at_import = stored(db_path, "run_id IS NULL")
    assert [row["flag"] for row in at_import] == ["unit_dominates_variance"]
    assert at_import[0]["unit_id"] == 0 and f"unit {LOUD_UNIT} holds" in at_import[0]["message"]
    assert f"loud: flag: {at_import[0]['message']} — try: {at_import[0]['suggestion']}" in lines

    header = next(line.split() for line in lines if line.startswith("run_id"))
    rows = {line.split()[0]: line.split() for line in lines if line.split()[:2] in (["1", "loud"], ["2", "loud"])}
    run = stored(db_path, "run_id = 1")
    assert rows["1"][header.index("flags")] == str(len(run))
    assert rows["2"][header.index("flags")] == "0"
    flag_lines = [line for line in lines if line.startswith("run ")]
    assert flag_lines == [f"run 1: flag: SAE 1: {row['message']} — try: {row['suggestion']}" for row in run]
    # The flag lines come after the runs table, set off by a blank line; run 2 adds none.
    assert lines.index(flag_lines[0]) > lines.index("(2 rows)") + 1 and lines[lines.index(flag_lines[0]) - 1] == ""


def test_info_prints_no_flag_lines_where_there_are_none(db_path, cli) -> None:
    cli("sql", "--db", str(db_path), "--write", "DELETE FROM quality_flags")
    result = cli("info", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    assert "flag:" not in result.stdout
    assert result.stdout.rstrip().endswith("(1 row)")  # nothing after the runs table


def test_report_lists_the_flags_and_writes_them_beside_it(db_path, cli, tmp_path) -> None:
    result = cli("report", "--run", "1", "--out", "report.md", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    section = text[text.index("## Quality flags"):text.index("## Ranked features")]
    assert text.index("## Quality\n") < text.index("## Quality flags")
    at_import, run = stored(db_path, "run_id IS NULL"), stored(db_path, "run_id = 1")
    dataset_part, sae_part = section.split("SAE 1:")
    assert "Dataset 'loud' (at import):" in dataset_part
    assert f"- `unit_dominates_variance`: {flag_line(at_import[0], with_sae=False)}" in dataset_part
    assert [line for line in sae_part.splitlines() if line.startswith("- ")] == [
        f"- `{row['flag']}`: {row['message']} — try: {row['suggestion']}" for row in run]
    table = pl.read_csv(tmp_path / "report_tables" / "quality_flags.csv")
    assert table["flag"].to_list() == ["unit_dominates_variance", *(row["flag"] for row in run)]
    assert table["run_id"].to_list() == [None, *(1 for _ in run)]
    assert table["threshold"].to_list() == pytest.approx([r["threshold"] for r in at_import + run])


def test_report_says_none_where_nothing_is_flagged(db_path, cli, tmp_path) -> None:
    cli("sql", "--db", str(db_path), "--write", "DELETE FROM quality_flags")
    result = cli("report", "--run", "1", "--out", "report.md", "--db", str(db_path))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report.md").read_text()
    assert "Dataset 'loud' (at import): none." in text and "SAE 1: none." in text
    assert pl.read_csv(tmp_path / "report_tables" / "quality_flags.csv").height == 0
