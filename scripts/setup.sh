#!/usr/bin/env bash
# Create .venv (once) and install mini into it; reinstall only when pyproject.toml changes.
# Usage: scripts/setup.sh [dev]    ("dev" adds the test tools)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extra=${1:-}
venv="$root/.venv"

find_python() {
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "mini: error: needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
    return 2
}

if [ ! -x "$venv/bin/python" ]; then
    python=$(find_python)
    echo "mini: creating $venv with $("$python" --version)" >&2
    if "$python" -c 'import torch' >/dev/null 2>&1; then
        # A GPU server's own PyTorch (built for its CUDA) is kept: the venv sees it.
        "$python" -m venv --system-site-packages "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi

stamp="$venv/.mini-installed${extra:+-$extra}"
want=$(sha256sum < "$root/pyproject.toml" | cut -d" " -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "mini: installing mini${extra:+ with $extra tools} into .venv (the first time takes a minute)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
    if ! "$venv/bin/python" -c 'import torch' >/dev/null 2>&1; then
        # Pin a version so pip never resolves "newest torch" on its own; where a local CPU wheel of it
        # is on pip's find-links (CI machines), that is taken; elsewhere the platform's default build.
        # Set MINI_TORCH to choose another, e.g. MINI_TORCH="torch==2.5.1".
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${MINI_TORCH:-torch==2.13.0}"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root${extra:+[$extra]}"
    echo "$want" > "$stamp"
fi
