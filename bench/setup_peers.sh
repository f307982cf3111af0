#!/usr/bin/env bash
# The bench environment: mini plus the trainers it is compared with (never project dependencies).
# torch is pinned so pip cannot swap the machine's build for another one.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv-bench"
python=${PYTHON:-python3}
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
torch_spec=$("$venv/bin/python" -c 'import torch; print("torch==" + torch.__version__.split("+")[0])' 2>/dev/null \
    || echo "${MINI_TORCH:-torch==2.13.0}")
echo "$torch_spec" > "$venv/constraints.txt"
"$venv/bin/python" -m pip install --quiet -c "$venv/constraints.txt" "$torch_spec" \
    "sae-lens==6.54.12" "eai-sparsify==1.3.3"
"$venv/bin/python" -m pip install --quiet -c "$venv/constraints.txt" -e "$root"
echo "bench environment ready: $venv/bin/python bench/train.py" >&2
