"""The direction of imports (tui -> engine -> store; no textual below tui; no torch in store) holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("tui", "engine", "store", "sample_data")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).parent / "lint-imports"
    return subprocess.run([str(lint), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 kept, 0 broken" in result.stdout


def copy_project(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, target / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", target / "pyproject.toml")
    return target


def lint_with_sneaky_module(tmp_path: Path, package: str, source: str) -> str:
    """Lint a copy of the project with `package/sneaky.py` holding `source`; the linter must fail.
    Returns its report."""
    root = copy_project(tmp_path)
    (root / package / "sneaky.py").write_text(source)
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    return result.stdout


def test_contracts_catch_textual_in_store(tmp_path):
    report = lint_with_sneaky_module(tmp_path, "store", "def f():\n    from textual.app import App\n    return App\n")
    assert "engine and store never import textual BROKEN" in report
    assert "store never imports torch KEPT" in report


def test_contracts_catch_an_upward_import(tmp_path):
    report = lint_with_sneaky_module(tmp_path, "engine", "import tui.cli\n")
    assert "Layers: tui -> engine -> store BROKEN" in report


def test_contracts_catch_an_earlier_stage_importing_a_later_one(tmp_path):
    """Ingest comes before training, training before analysis: an importer reaching into the ranking
    (or a shared module into any stage) breaks the pipeline's order."""
    root = copy_project(tmp_path)
    (root / "engine" / "ingest" / "sneaky.py").write_text("from engine.analysis import rank\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "engine: the pipeline's stages in order (a stage imports only earlier ones) BROKEN" in result.stdout
    (root / "engine" / "ingest" / "sneaky.py").unlink()
    (root / "engine" / "errors.py").write_text((root / "engine" / "errors.py").read_text()
                                               + "\nimport engine.sae.train\n")
    result = lint_imports(root)
    assert result.returncode != 0 and "engine's shared modules import no stage BROKEN" in result.stdout


def test_contracts_catch_torch_in_store(tmp_path):
    report = lint_with_sneaky_module(tmp_path, "store", "import torch\n")
    assert "store never imports torch BROKEN" in report


def test_the_app_reaches_home_without_the_heavy_libraries(app_db: Path) -> None:
    """Start-up time is mostly imports: what Home needs for its first frame (its datasets and runs read
    and drawn) must not pull in polars, pyarrow, numpy or torch; each is imported where a screen or
    command first needs it."""
    script = (
        "import asyncio, sys\n"
        "from store import Store\n"
        "from tui.app import MiniApp\n"
        "async def main():\n"
        f"    app = MiniApp(Store.open({str(app_db)!r}))\n"
        "    async with app.run_test(size=(80, 24)) as pilot:\n"
        "        await app.workers.wait_for_complete()\n"
        "        await pilot.pause()\n"
        "        assert app.screen.query_one('#runs').row_count == 1\n"
        "        print(' '.join(m for m in ('polars', 'pyarrow', 'numpy', 'torch') if m in sys.modules))\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"imported on the way to Home: {done.stdout.strip()}"
