#!/usr/bin/env bash
# The tests in one command: install mini with its test tools, lint, run the whole suite.
# Extra arguments go to pytest (e.g. -k import).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh" dev
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -n auto --durations=25 "$@"
