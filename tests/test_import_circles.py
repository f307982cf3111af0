"""No import circles between mini's modules: a module never imports, however indirectly, one that imports it.

Import-linter keeps the layers (tui -> engine -> store) in order; within a layer two modules can still
import each other, and a function-level or TYPE_CHECKING import hides the circle from Python without
untangling it. grimp (import-linter's graph) counts every kind, so the strongly connected components of its
graph are the circles, each listed as one chain of imports with the lines that make it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.test_architecture import PACKAGES, copy_project

# Run in a fresh interpreter with only `root` on the path, so a copy of the project is read, not this one.
FIND_CIRCLES = """
import json, sys
import grimp

graph = grimp.build_graph(*sys.argv[1:], cache_dir=None)  # function-level and TYPE_CHECKING imports count
order, low, stack, on_stack, circles = {}, {}, [], set(), []
for start in sorted(graph.modules):  # Tarjan's strongly connected components, iteratively
    if start in order:
        continue
    work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
    order[start] = low[start] = len(order)
    stack.append(start)
    on_stack.add(start)
    while work:
        module, imported = work[-1]
        for other in imported:
            if other not in order:
                order[other] = low[other] = len(order)
                stack.append(other)
                on_stack.add(other)
                work.append((other, iter(sorted(graph.find_modules_directly_imported_by(other)))))
                break
            if other in on_stack:
                low[module] = min(low[module], order[other])
        else:
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[module])
            if low[module] == order[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))


def line(importer, imported):
    details = graph.get_import_details(importer=importer, imported=imported)
    return f"{importer} -> {imported} (line {details[0]['line_number']}: {details[0]['line_contents']})" \\
        if details else f"{importer} -> {imported}"


report = []
for component in sorted(circles):
    first = component[0]
    back = min((graph.find_shortest_chain(importer=other, imported=first) for other in component[1:]
                if graph.direct_import_exists(importer=first, imported=other)), key=len)
    chain = [first, *back]  # first imports back[0], which leads back to first: one circle through both
    report.append({"modules": component, "chain": [line(a, b) for a, b in zip(chain, chain[1:])]})
print(json.dumps(report))
"""


def import_circles(root: Path) -> list[dict]:
    """Every circle among `root`'s packages: its modules and one chain of imports around it."""
    done = subprocess.run([sys.executable, "-c", FIND_CIRCLES, *PACKAGES], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def describe(circles: list[dict]) -> str:
    return "\n".join(f"{' <-> '.join(c['modules'])}:\n    " + "\n    ".join(c["chain"]) for c in circles)


def test_no_module_imports_one_that_imports_it():
    circles = import_circles(ROOT)
    assert circles == [], f"{len(circles)} import circle(s):\n{describe(circles)}"


def test_a_planted_circle_is_found_with_its_chain(tmp_path):
    """Two kinds of import Python lets through: a TYPE_CHECKING import (Home naming the app's type again)
    and a function-level one (the store reaching back into runs at open); each is a circle, listed with its
    lines, and the modules outside them are not."""
    root = copy_project(tmp_path)
    home = root / "tui" / "screens" / "home.py"
    lines = home.read_text().splitlines(keepends=True)
    planted = lines.index("if TYPE_CHECKING:\n") + 1
    home.write_text("".join([*lines[:planted], "    import tui.app\n", *lines[planted:]]))
    (root / "store" / "db.py").write_text((root / "store" / "db.py").read_text()
                                          + "\n\ndef _runs():\n    from store import runs\n    return runs\n")
    circles = import_circles(root)
    assert len(circles) == 2, describe(circles)
    store_circle, tui_circle = sorted(circles, key=lambda c: c["modules"][0].startswith("tui"))
    assert {"store.db", "store.runs"} <= set(store_circle["modules"]), describe(circles)  # epochs: runs -> it -> db
    assert {"tui.app", "tui.screens.home"} <= set(tui_circle["modules"]), describe(circles)
    assert f"tui.screens.home -> tui.app (line {planted + 1}: import tui.app)" in tui_circle["chain"]
    assert store_circle["chain"][0].startswith("store.db -> store.runs (line ")
    assert "from store import runs" in store_circle["chain"][0]
    assert store_circle["chain"][-1].endswith("from store.db import Store)")
