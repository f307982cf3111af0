"""Every SQL statement mini runs is in store/: no string in engine/, tui/ or sample_data/ reads as SQL.

The check reads each module's syntax tree (the ast module), so comments are ignored and so are docstrings
(they describe, they do not run); every other string literal is checked, f-strings and `+` chains of
literals as the whole text they make. mini writes SQL keywords in capitals, and prose does not, so the
shapes below are matched case-sensitively: `one SELECT` or a statement type `"SELECT"` is not SQL,
`SELECT x FROM t` or a fragment `" WHERE sae_id = ? ORDER BY rank"` is.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

CHECKED = ("engine", "tui", "sample_data")
"""Packages that must hold no SQL (store/ holds it all; bench/ checks results with its own queries)."""

SQL_SHAPES = re.compile("|".join([
    r"\bSELECT\b.*\bFROM\b",
    r"\(\s*SELECT\b",
    r"\bSELECT\s+(DISTINCT\s+)?(\*|\?|\d|count\(|\w+\.\w)",
    r"\bINSERT\s+(OR\s+\w+\s+)?INTO\b",
    r"\bUPDATE\s+\w+\s+SET\b",
    r"\bDELETE\s+FROM\b",
    r"\b(CREATE|DROP|ALTER)\s+(OR\s+REPLACE\s+)?(TEMP(ORARY)?\s+)?(TABLE|VIEW|INDEX|SEQUENCE|MACRO|SCHEMA|TYPE)\b",
    r"\bWITH\s+(RECURSIVE\s+)?\w+(\s*\([^)]*\))?\s+AS\s*\(",
    r"\bFROM\s+\w+(\s+(AS\s+)?\w+)?\s+(WHERE|JOIN|LEFT|INNER|ORDER|GROUP|USING)\b",
    r"\bWHERE\s+[\w.]+\s*(=|<>|!=|<|>|IN\b|IS\b|LIKE\b)",
    r"\b(ORDER|GROUP)\s+BY\b",
    r"\b(LEFT|INNER|CROSS|FULL)\s+JOIN\b|\bJOIN\s+\w+(\s+\w+)?\s+(USING|ON)\b",
    r"\bBEGIN\s+TRANSACTION\b|\bROLLBACK\b|\bCHECKPOINT\b",
    r"\bCOPY\s+\(?\w+.*\bTO\b",
    r"\binformation_schema\b|\bduckdb_(tables|columns|views|settings)\s*\(",
]), re.DOTALL)
"""Shapes of SQL text: whole statements and the fragments queries are built from."""


def _text(node: ast.AST) -> str | None:
    """The text a string expression makes (placeholders as {}), or None when it is not one."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None or right is None else left + right
    return None


def sql_strings(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string expression in the module's source that reads as SQL, docstrings left out."""
    tree = ast.parse(source)
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = {}
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        text = _text(node)
        if text is not None and SQL_SHAPES.search(text):
            found.setdefault(node.lineno, text)
    return sorted(found.items())


def sql_outside_store(root: Path, packages: tuple[str, ...] = CHECKED) -> list[str]:
    """`file:line: text` for every SQL string in the packages' modules under root."""
    hits = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for line, text in sql_strings(path.read_text(encoding="utf-8")):
                hits.append(f"{path.relative_to(root)}:{line}: {text.strip()[:80]!r}")
    return hits


def test_no_sql_outside_store():
    hits = sql_outside_store(ROOT)
    assert not hits, "SQL outside store/ (move it into a store/ function):\n" + "\n".join(hits)


def test_a_planted_query_is_found_with_its_file_and_line(tmp_path):
    module = tmp_path / "engine" / "analysis" / "sneaky.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        '"""Reads the ranking; SELECT and FROM in a docstring are prose."""\n'
        "\n"
        "def top(db, sae_id, table):\n"
        '    kinds = ("SELECT", "INSERT")  # statement type names, not SQL\n'
        '    note = "one SELECT, read-only; reads from standard input"\n'
        '    a = db.frame("SELECT feature_id FROM rankings WHERE sae_id = ?", [sae_id])\n'
        '    b = db.frame(f"SELECT count(*) {table}"\n'
        '                 " FROM {table} WHERE sae_id = ?", [sae_id])\n'
        '    order = " ORDER BY rank"\n'
        '    db.con.execute("DELETE " + "FROM labels")\n'
        '    return a, b, order, kinds, note\n',
        encoding="utf-8")
    hits = sql_outside_store(tmp_path, ("engine",))
    assert [hit.split(": ", 1)[0] for hit in hits] == [
        "engine/analysis/sneaky.py:6", "engine/analysis/sneaky.py:7", "engine/analysis/sneaky.py:9",
        "engine/analysis/sneaky.py:10"]
    assert "'SELECT feature_id FROM rankings WHERE sae_id = ?'" in hits[0]
    assert "'SELECT count(*) {} FROM {table} WHERE sae_id = ?'" in hits[1]


def test_the_check_sees_the_queries_store_holds():
    """The shapes match SQL as mini writes it: every query function of store/report.py is found."""
    source = (ROOT / "store" / "report.py").read_text(encoding="utf-8")
    texts = " ".join(text for _, text in sql_strings(source))
    for table in ("saes", "qc", "rankings", "labels", "current_labels", "analysis_epochs", "signatures",
                  "examples", "natural_variables", "tuning_curves", "natural_values"):
        assert re.search(rf"\b{table}\b", texts), table
    assert sql_outside_store(ROOT, ("store",)), "the shapes find no SQL even in store/"
