#!/usr/bin/env bash
# The demo in one command: install, generate the sample recording, run the pipeline, open the app.
# Extra arguments go to `mini demo` (e.g. --no-tui). The database is demo.duckdb in the project root.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
exec "$root/.venv/bin/mini" demo --db "$root/demo.duckdb" "$@"
