#!/usr/bin/env bash
# The GPU check, in one script of under 8 minutes on one H100: prints the GPU, runs the tests marked cuda, then
# bench/train.py on cuda side by side with SAELens and sparsify (same GPU, same bf16 autocast), at the sample
# recording's shape and at d_in 1024 × 16,384 examples with 16,384 latents, and prints ONE JSON line last with the
# figures and the targets (>= 30 % of the bf16 matmul peak; >= 1.5x the fastest peer).
#
#   bash bench/gpu.sh --prepare   # where pip reaches the registry: wheels a bare GPU machine lacks -> .whl/, .whl-2/ …
#   bash bench/gpu.sh             # on the GPU machine, from the repository root, every .whl*/ copied along
#
# A GPU machine's own Python with its CUDA build of PyTorch is used (PYTHON, else .venv/bin/python if that one
# sees a GPU, else python3); what it lacks (mini's dependencies, the peers and theirs) is installed from the .whl*/
# folders into a temporary folder, never over its PyTorch. The wheels come in parts of at most 56 MiB, as a device
# call carries 64 MiB with the working tree: bench/README.md ("GPU") gives the calls. Logs and JSON go to $OUT
# when set, else to a temporary folder. Where PyTorch sees no CUDA device it stops at once: one line, exit 2.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
root=$(pwd)
wheels="$root/.whl"
PEERS=("sae-lens==6.54.12" "eai-sparsify==1.3.3")
# Installed on a CUDA PyTorch image (and large): never downloaded, never installed over.
IMAGE_HAS='^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|numpy|scipy|pandas|pyarrow|scikit-learn|transformers|tokenizers|safetensors|huggingface-hub|hf-xet|accelerate|sympy|networkx|jinja2|markupsafe|pillow|matplotlib|fonttools|kiwisolver|contourpy|cycler|pyparsing|regex|sentencepiece|tiktoken|requests|urllib3|idna|certifi|charset-normalizer|pyyaml|packaging|filelock|fsspec|tqdm|typing-extensions|setuptools|pip|wheel|joblib|threadpoolctl|rich|pygments|markdown-it-py|mdurl|psutil|protobuf|aiohttp|aiosignal|frozenlist|multidict|yarl|propcache|attrs|aiohappyeyeballs|xxhash|python-dateutil|six|pytest|pluggy|iniconfig|jaxtyping|einops|cupy-.*|jax.*|opencv-.*|onnx.*|statsmodels|patsy|numba|llvmlite|h5py|lxml)$'

if [ "${1:-}" = "--prepare" ]; then
    python=${PYTHON:-python3}
    platforms=()
    for tag in manylinux_2_17 manylinux2014 manylinux_2_24 manylinux_2_27 manylinux_2_28 manylinux_2_31 manylinux_2_34; do
        platforms+=(--platform "${tag}_x86_64")
    done
    report=$(mktemp)
    deps=$("$python" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))')
    # Resolve mini's dependencies and the peers here, then fetch what the GPU image lacks as wheels for its Python
    # (3.12, x86-64); a package published only as source is built into a wheel here (pure Python ones are).
    # shellcheck disable=SC2086
    "$python" -m pip install --quiet --dry-run --ignore-installed --report "$report" $deps "${PEERS[@]}" 2>/dev/null \
        || { echo "bench/gpu.sh --prepare: pip could not resolve mini's dependencies and the peers" >&2; exit 2; }
    rm -rf "$wheels" "$root"/.whl-*
    mkdir -p "$wheels"
    "$python" - "$report" "$IMAGE_HAS" > "$wheels/wanted.txt" <<'EOF'
import json, re, sys
report, image_has = json.load(open(sys.argv[1])), re.compile(sys.argv[2])
for item in report["install"]:
    name = item["metadata"]["name"].lower().replace("_", "-")
    if not image_has.match(name):
        print(f"{name}=={item['metadata']['version']}")
EOF
    while read -r spec; do
        "$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d "$wheels" "$spec" 2>/dev/null \
            || "$python" -m pip wheel --quiet --no-deps -w "$wheels" "$spec" 2>/dev/null \
            || { echo "bench/gpu.sh --prepare: no wheel of $spec for Python 3.12 on x86-64" >&2; exit 2; }
    done < "$wheels/wanted.txt"
    # A device call carries at most 64 MiB with the working tree: the wheels go in parts of at most 56 MiB
    # (.whl/, .whl-2/, …), largest first, each part into the first one it fits.
    "$python" - "$wheels" <<'EOF'
import pathlib, shutil, sys
wheels, bound = pathlib.Path(sys.argv[1]), 56 << 20
parts = [[wheels, 0]]
for wheel in sorted(wheels.glob("*.whl"), key=lambda w: -w.stat().st_size):
    size = wheel.stat().st_size
    part = next((p for p in parts if p[1] + size <= bound), None)
    if part is None:
        part = [wheels.with_name(f".whl-{len(parts) + 1}"), 0]
        part[0].mkdir(exist_ok=True)
        parts.append(part)
    if part[0] != wheels:
        shutil.move(str(wheel), part[0] / wheel.name)
    part[1] += size
for folder, size in parts:
    print(f"bench/gpu.sh --prepare: {folder.name}/ {len(list(folder.glob('*.whl')))} wheels, {size / 2**20:.0f} MiB",
          file=sys.stderr)
EOF
    exit 0
fi

started=$SECONDS
python=""
for candidate in "${PYTHON:-}" "$root/.venv/bin/python" python3; do
    [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' >/dev/null 2>&1; then
        python=$candidate; break
    fi
done
if [ -z "$python" ]; then
    echo "bench/gpu.sh: error: no CUDA GPU is visible to PyTorch here (tried \$PYTHON, .venv/bin/python, python3); run it on a GPU machine" >&2
    exit 2
fi

out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
site=$(mktemp -d)
if compgen -G "$root/.whl*/*.whl" >/dev/null; then
    # Only the wheels of distributions this Python lacks: its own (CUDA) PyTorch and friends stay.
    missing=$("$python" - "$root" <<'EOF'
import pathlib, sys
from importlib import metadata
installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
for wheel in sorted(pathlib.Path(sys.argv[1]).glob(".whl*/*.whl")):
    if wheel.name.split("-")[0].lower().replace("_", "-") not in installed:
        print(wheel)
EOF
)
    if [ -n "$missing" ]; then
        # shellcheck disable=SC2086
        "$python" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" $missing \
            > "$out/setup.log" 2>&1 || { echo "bench/gpu.sh: error: installing the .whl*/ wheels failed (see $out/setup.log)" >&2; exit 2; }
    fi
fi
export PYTHONPATH="$site:$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if ! "$python" -c 'import duckdb, polars, engine.pipeline, engine.sae.train' >>"$out/setup.log" 2>&1; then
    echo "bench/gpu.sh: error: $(tail -n 1 "$out/setup.log"); run 'bash bench/gpu.sh --prepare' where pip works and bring .whl/ along" >&2
    exit 2
fi

nvidia-smi > "$out/nvidia-smi.txt" 2>&1
gpu=$("$python" -c 'import torch; print(torch.cuda.get_device_name(0))')
echo "GPU: $gpu; torch $("$python" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')" >&2
head -12 "$out/nvidia-smi.txt" >&2

MINI_REQUIRE_CUDA=1 timeout 120 "$python" -m pytest -m cuda -q -p no:cacheprovider tests/test_cuda.py > "$out/pytest_cuda.log" 2>&1
tests_rc=$?
tail -n 3 "$out/pytest_cuda.log" >&2

# The sample's shape (60,000 × 120 counts, d_sae 512, 30 epochs, 8-SAE sweep) and the target's.
timeout 150 "$python" bench/train.py --device cuda --repeat 1 > "$out/train_sample.json" 2> "$out/train_sample.log"
sample_rc=$?
timeout 150 "$python" bench/train.py --device cuda --repeat 1 --d-in 1024 --examples 16384 --d-sae 16384 --cancel-repeat 0 \
    > "$out/train_target.json" 2> "$out/train_target.log"
target_rc=$?
tail -n 4 "$out/train_sample.log" "$out/train_target.log" >&2

"$python" - "$out" "$gpu" "$tests_rc" "$sample_rc" "$target_rc" "$((SECONDS - started))" <<'EOF' | tee "$out/gpu.json"
import json, pathlib, sys
out, gpu, tests_rc, sample_rc, target_rc, seconds = sys.argv[1:]
out = pathlib.Path(out)

def last_json(name):
    lines = (out / name).read_text().strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return None

def figures(result):
    if result is None:
        return None
    keep = ("matmul_peak_gflops", "precision", "d_in", "d_sae", "examples", "epochs", "speedup_vs_fastest_peer")
    picked = {key: result.get(key) for key in keep}
    for name in ("mini", "sparsify", "saelens", "sweep"):
        if name in result:
            picked[name] = result[name]
    return picked

sample, target = last_json("train_sample.json"), last_json("train_target.json")
summary = (out / "pytest_cuda.log").read_text().strip().splitlines()
fraction = target and target["mini"]["fraction_of_encoder_roofline"]
speedups = {shape: r.get("speedup_vs_fastest_peer") for shape, r in (("sample", sample), ("target", target)) if r}
print(json.dumps({
    "bench": "gpu", "gpu": gpu, "seconds": int(seconds),
    "cuda_tests": {"rc": int(tests_rc), "summary": summary[-1] if summary else ""},
    "sample": figures(sample) if int(sample_rc) == 0 else {"rc": int(sample_rc)},
    "target_shape": figures(target) if int(target_rc) == 0 else {"rc": int(target_rc)},
    "targets": {
        "fraction_of_bf16_peak_at_target_shape": {"value": fraction, "target": 0.30,
                                                  "met": fraction is not None and fraction >= 0.30},
        "speedup_vs_fastest_peer": {"value": speedups, "target": 1.5,
                                    "met": bool(speedups) and all(v is not None and v >= 1.5 for v in speedups.values())},
    },
}))
EOF
[ "$tests_rc" -eq 0 ] && [ "$sample_rc" -eq 0 ] && [ "$target_rc" -eq 0 ]
