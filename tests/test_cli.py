"""The `mini` command line, run as a separate process: demo, info, sql and its stable output."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest

DEMO_DRAWS = 20


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from tests.conftest import run_cli

    folder = tmp_path_factory.mktemp("demo")
    # --max-shuffles 1000: the ranking's late rounds (up to 25,000 shuffles) were most of a 90-s demo here;
    # --max-draws 20: no verdict is checked here, and the validation's default draws took most of what was left
    result = run_cli("demo", "--no-tui", "--epochs", "1", "--auto-accept", "3", "--max-shuffles", "1000",
                     "--max-draws", str(DEMO_DRAWS), "--db", "demo.duckdb", cwd=folder, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "imported 'sample'" in result.stderr
    return folder / "demo.duckdb"


def test_help_lists_every_command(cli):
    result = cli("--help")
    assert result.returncode == 0
    for command in ("demo", "import", "info", "sql", "tui"):
        assert command in result.stdout


def test_demo_sql_prints_three_splits(demo_db, cli):
    result = cli("sql", "--db", str(demo_db), "SELECT split, count(*) FROM examples GROUP BY split ORDER BY split")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["split", "count_star()"]
    assert [line.split()[0] for line in lines[2:5]] == ["test", "train", "val"]
    assert lines[-1] == "(3 rows)"
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[2:5]}
    assert sum(counts.values()) == 60_000 and 0.66 < counts["train"] / 60_000 < 0.74


def test_demo_stores_the_ground_truth(demo_db, cli):
    result = cli("sql", "--db", str(demo_db), "--format", "json",
                 "SELECT l.name, l.predicate, count(*) AS n_units FROM ground_truth_latents l "
                 "JOIN ground_truth_loadings g USING (dataset_id, latent_id) GROUP BY ALL ORDER BY l.name")
    rows = json.loads(result.stdout)
    assert len(rows) == 15
    assert {"name": "reward", "predicate": "reward = 1"}.items() <= next(r for r in rows if r["name"] == "reward").items()
    roles = json.loads(cli("sql", "--db", str(demo_db), "--format", "json",
                           "SELECT variable FROM ground_truth_variables WHERE role = 'distractor' ORDER BY 1").stdout)
    assert [r["variable"] for r in roles] == ["distractor", "house_light"]


def test_demo_trains_a_run_of_two_saes(demo_db, cli):
    rows = json.loads(cli("sql", "--db", str(demo_db), "--format", "json",
                          "SELECT r.status, count(s.sae_id) AS n, count(DISTINCT s.seed) AS seeds "
                          "FROM runs r JOIN saes s USING (run_id) GROUP BY r.status").stdout)
    assert rows == [{"status": "finished", "n": 2, "seeds": 2}]
    qc = json.loads(cli("sql", "--db", str(demo_db), "--format", "json",
                        "SELECT count(*) AS n FROM qc WHERE fvu IS NOT NULL AND pca_fvu IS NOT NULL").stdout)
    assert qc == [{"n": 6}]  # 2 SAEs × 3 splits


def test_demo_validates_its_labels_with_at_most_max_draws_of_each_kind(demo_db, cli):
    rows = json.loads(cli("sql", "--db", str(demo_db), "--format", "json",
                          "SELECT count(*) AS n, min(n_shifts) AS shifts, max(n_shifts) AS most_shifts, "
                          "max(n_ablation_null) AS ablations FROM validations WHERE testable").stdout)
    # 1,000 shifts and 100 ablation nulls by default: the cap reached the validation
    assert rows == [{"n": 3, "shifts": DEMO_DRAWS, "most_shifts": DEMO_DRAWS, "ablations": DEMO_DRAWS}]


def test_demo_twice_reuses_the_dataset(demo_db, cli):
    result = cli("demo", "--no-tui", "--db", str(demo_db))
    assert result.returncode == 0 and "reusing it" in result.stderr and "already trained" in result.stderr
    again = cli("sql", "--db", str(demo_db), "--format", "csv", "SELECT count(*) AS n FROM datasets")
    assert again.stdout.split() == ["n", "1"]


def test_table_format_is_stable(cli, demo_db):
    result = cli("sql", "--db", str(demo_db),
                 "SELECT 1 AS a, 'x' AS b, NULL::DOUBLE AS c UNION ALL SELECT 22, 'long text', 0.5 ORDER BY a")
    assert result.stdout == (
        " a  b             c\n"
        "--  ---------  ----\n"
        " 1  x          NULL\n"
        "22  long text   0.5\n"
        "(2 rows)\n"
    )


def test_csv_and_json_formats_parse(cli, demo_db):
    query = "SELECT name, n_units, bin_size_s FROM datasets"
    rows = list(csv.DictReader(io.StringIO(cli("sql", "--db", str(demo_db), "--format", "csv", query).stdout)))
    assert rows == [{"name": "sample", "n_units": "120", "bin_size_s": "0.05"}]
    records = json.loads(cli("sql", "--db", str(demo_db), "--format", "json", query).stdout)
    assert records == [{"name": "sample", "n_units": 120, "bin_size_s": 0.05}]


def test_sql_reads_the_query_from_stdin(cli, demo_db):
    result = cli("sql", "--db", str(demo_db), "--format", "csv", "-", stdin="SELECT 40 + 2 AS answer")
    assert result.stdout.split() == ["answer", "42"]


@pytest.mark.parametrize("query, words", [
    ("SELEC nonsense", "query failed: Parser Error"),
    ("SELECT * FROM no_such_table", "query failed: Catalog Error"),
    ("", "the query is empty"),
])
def test_bad_sql_is_one_line_and_exit_2(cli, demo_db, query, words):
    result = cli("sql", "--db", str(demo_db), query)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mini: error: ") and words in result.stderr


def test_sql_is_read_only_unless_asked(cli, tmp_path):
    db = str(tmp_path / "w.duckdb")
    assert cli("sql", "--db", db, "SELECT 1").returncode == 2  # no database yet, and none is created
    assert not (tmp_path / "w.duckdb").exists()
    assert cli("sql", "--db", db, "--write", "CREATE TABLE notes (t VARCHAR)").returncode == 0
    refused = cli("sql", "--db", db, "INSERT INTO notes VALUES ('x')")
    assert refused.returncode == 2 and "writes are off; add --write" in refused.stderr
    assert cli("sql", "--db", db, "--write", "INSERT INTO notes VALUES ('x')").returncode == 0
    assert cli("sql", "--db", db, "--format", "csv", "SELECT * FROM notes").stdout.split() == ["t", "x"]


def test_mini_db_environment_variable_is_the_default(cli, demo_db, tmp_path):
    env = {**os.environ, "MINI_DB": str(demo_db)}
    result = cli("info", env=env)
    assert result.returncode == 0 and "sample" in result.stdout and str(demo_db) in result.stdout


def test_info_on_an_empty_database(cli, tmp_path):
    cli("sql", "--db", "empty.duckdb", "--write", "SELECT 1")
    result = cli("info", "--db", "empty.duckdb")
    assert result.returncode == 0 and "no datasets yet" in result.stdout


def test_info_without_a_database_says_how_to_make_one(cli):
    result = cli("info", "--db", "nothing.duckdb")
    assert result.returncode == 2 and "no such database" in result.stderr and "mini demo" in result.stderr


@pytest.mark.parametrize("args", [("import", "c.npy", "--meta", "m.csv", "--bin-size", "abc"),
                                  ("import", "c.npy"), ("frobnicate",), ("sql", "--format", "xml", "SELECT 1")])
def test_usage_errors_are_one_line_with_exit_2(cli, args):
    result = cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mini: error: ")
    assert "--help" in result.stderr


@pytest.mark.parametrize("args, suggestion", [
    (("trian",), "did you mean 'train'?"),
    (("valdate", "--run", "1"), "did you mean 'validate'?"),
    (("train", "--dataset", "x", "--arch", "topkk"), "did you mean 'topk'?"),
    (("train", "--dataset", "x", "--loss", "poison"), "did you mean 'poisson'?"),
    (("xyzzy",), None),
])
def test_a_mistyped_command_or_choice_gets_the_closest_one(cli, tmp_path, args, suggestion):
    result = cli(*args, "--db", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mini: error: ") and "invalid choice" in result.stderr
    assert (suggestion in result.stderr) if suggestion else "did you mean" not in result.stderr
    assert not (tmp_path / "none.duckdb").exists()


def test_the_app_without_a_database_says_how_to_make_one_and_creates_nothing(cli, tmp_path):
    for args in ((), ("tui",), ("--db", str(tmp_path / "elsewhere.duckdb"))):
        result = cli(*args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "no database here; make one with `mini demo`" in result.stderr and "mini import" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_label_text_is_stored_as_given_and_echoed_escaped(cli, tmp_path, demo_db):
    import shutil

    db = tmp_path / "l.duckdb"
    shutil.copy(demo_db, db)
    text = "red \x1b[31mALERT\x1b[0m\nsecond line"
    done = cli("label", "--run", "1", "--feature", "3", "--name", text, "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and done.stdout.count("\n") == 1
    assert "red \\x1b[31mALERT\\x1b[0m\\nsecond line" in done.stdout
    stored = cli("sql", "--db", str(db), "--format", "json", "SELECT name FROM labels ORDER BY label_id DESC LIMIT 1")
    assert json.loads(stored.stdout)[0]["name"] == text
