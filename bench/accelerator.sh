#!/usr/bin/env bash
# The backbones on a GPU: forward and training-step images/s, compile time, peak device memory
# and MFU, in float32 and bfloat16, beside the official PyTorch DDColor (eager) on the same GPU.
# docs/accelerators.md explains the columns and the peak FLOP/s behind the MFU.
#
# On a GPU machine, from anywhere:
#
#     DDCOLOR_SRC=/path/to/DDColor bash bench/accelerator.sh            # install, then bench
#     bash bench/accelerator.sh --skip-install --out runs/accelerator/h100   # jax with CUDA there
#     bash bench/accelerator.sh --dry-run                               # print the commands only
#     PYTHON=python3 bash bench/accelerator.sh --skip-install --wheels .whl --ddcolor-src .ddcolor
#                                          # no internet: the machine's jax, flax, torch + wheels
#
# It creates (or reuses) the virtual environment $VENV, installs the project there with the
# versions of constraints.txt, PyTorch with CUDA (only when the official DDColor source is
# given) and the CUDA build of the jax version that constraints.txt pins, checks that JAX sees a
# GPU, then runs bench/models.py once for DDColor (with the official model beside it) and once
# for the other backbones. The table goes to stdout and to OUT/table.txt, every result as a JSON
# line to OUT/results.jsonl, with OUT/nvidia-smi.txt and OUT/pip-freeze.txt beside them.
#
# Arguments:
#   --out DIR           where the results go (or $OUT_DIR; default runs/accelerator/<date-time>)
#   --ddcolor-src DIR   a checkout of github.com/piddnad/DDColor (or $DDCOLOR_SRC); without it
#                       the PyTorch side is skipped
#   --skip-install      install nothing; run with $PYTHON (default $VENV/bin/python if it exists,
#                       else python3), e.g. a machine's own Python that has jax with CUDA
#   --wheels DIR        with --skip-install: first install the wheels in DIR (no index, no
#                       dependencies) into a folder of their own on the path, for what that
#                       Python lacks; the bench needs jax, flax, optax, absl-py, PyYAML and
#                       ml_collections (and torch for the PyTorch side), not the data pipeline's
#                       packages. docs/accelerators.md: on a machine without internet
#   --dry-run           print the commands instead of running them; no checks
# Environment (defaults in brackets):
#   VENV [.venv]  BASE_PYTHON, the Python that creates it [python3]
#   JAX_CUDA, the jax extra [cuda12; cuda13 for a CUDA 13 driver]
#   TORCH_INDEX_URL [https://download.pytorch.org/whl/cu128]  TORCH_SPEC [torch]
#   DDCOLOR_MODELS [ddcolor_tiny:256 ddcolor_large:256]  OTHER_MODELS [chromagan:224 discolor:256];
#     set to nothing (OTHER_MODELS=) runs none of them
#   BATCHES [8 32]  DTYPES [float32 bfloat16]  MODES [forward train]  STEPS [20]
#   DDCOLOR_OVERRIDES, DDColor fields for get_backbone, e.g. "remat=true kernels=native" []
#   ALLOW_CPU=1 runs on a machine without a GPU: only to try the script on small models.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SKIP_INSTALL=0
DRY_RUN=0
OUT_DIR="${OUT_DIR:-runs/accelerator/$(date +%Y%m%d-%H%M%S)}"
DDCOLOR_SRC="${DDCOLOR_SRC:-}"
WHEELS=""
while (($#)); do
  case "$1" in
    --out) OUT_DIR="${2:?bench/accelerator.sh: --out needs a directory}"; shift 2 ;;
    --ddcolor-src) DDCOLOR_SRC="${2:?bench/accelerator.sh: --ddcolor-src needs a directory}"; shift 2 ;;
    --skip-install) SKIP_INSTALL=1; shift ;;
    --wheels) WHEELS="${2:?bench/accelerator.sh: --wheels needs a directory}"; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/accelerator.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

VENV="${VENV:-.venv}"
BASE_PYTHON="${BASE_PYTHON:-python3}"
JAX_CUDA="${JAX_CUDA:-cuda12}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cu128}"
TORCH_SPEC="${TORCH_SPEC:-torch}"
DDCOLOR_MODELS="${DDCOLOR_MODELS-ddcolor_tiny:256 ddcolor_large:256}"  # set and empty: none
OTHER_MODELS="${OTHER_MODELS-chromagan:224 discolor:256}"
BATCHES="${BATCHES:-8 32}"
DTYPES="${DTYPES:-float32 bfloat16}"
MODES="${MODES:-forward train}"
STEPS="${STEPS:-20}"
DDCOLOR_OVERRIDES="${DDCOLOR_OVERRIDES:-}"
ALLOW_CPU="${ALLOW_CPU:-0}"

fail() {
  echo "bench/accelerator.sh: $*" >&2
  exit 1
}

# Runs a command, or with --dry-run prints it.
run() {
  if ((DRY_RUN)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

if [[ -n "$WHEELS" ]] && ((!SKIP_INSTALL)); then
  fail "--wheels goes with --skip-install (it adds to a Python's own packages)"
fi
if [[ -n "$DDCOLOR_SRC" && ! -f "$DDCOLOR_SRC/basicsr/archs/ddcolor_arch.py" ]]; then
  fail "$DDCOLOR_SRC is not a DDColor checkout (no basicsr/archs/ddcolor_arch.py)"
fi
if [[ -z "$DDCOLOR_SRC" ]]; then
  echo "no official DDColor source (DDCOLOR_SRC or --ddcolor-src): the PyTorch side is skipped"
fi
# Before gigabytes of CUDA wheels go where no GPU can use them.
if ((!DRY_RUN && !ALLOW_CPU)) && ! command -v nvidia-smi >/dev/null; then
  fail "no NVIDIA driver here (nvidia-smi not found); ALLOW_CPU=1 only tries the script"
fi

if ((SKIP_INSTALL)); then
  if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$VENV/bin/python" ]]; then PYTHON="$VENV/bin/python"; else PYTHON=python3; fi
  fi
  if [[ -n "$WHEELS" ]]; then
    compgen -G "$WHEELS/*.whl" >/dev/null || fail "no *.whl in $WHEELS"
    SITE="$(mktemp -d)"
    trap 'rm -rf "$SITE"' EXIT
    run "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
else
  PYTHON="$VENV/bin/python"
  JAX_VERSION="$(sed -n 's/^jax==//p' constraints.txt)"
  [[ -n "$JAX_VERSION" ]] || fail "constraints.txt pins no jax version (no line jax==...)"
  # constraints.txt pins the CPU builds of jaxlib and torch; the GPU builds come separately.
  CONSTRAINTS="$(mktemp)"
  trap 'rm -f "$CONSTRAINTS"' EXIT
  grep -viE '^(jax|jaxlib|torch)==' constraints.txt >"$CONSTRAINTS"
  if ((DRY_RUN)); then echo "+ # $CONSTRAINTS: constraints.txt less its jax, jaxlib, torch lines"; fi
  PIP=("$PYTHON" -m pip install --disable-pip-version-check)
  [[ -x "$PYTHON" ]] || run "$BASE_PYTHON" -m venv "$VENV"
  # torch first: it pins its CUDA libraries exactly, jax's CUDA plugin only bounds them below, so
  # jax then keeps torch's where they satisfy it.
  if [[ -n "$DDCOLOR_SRC" ]]; then
    run "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "$TORCH_SPEC"
  fi
  run "${PIP[@]}" -c "$CONSTRAINTS" -e . "jax[$JAX_CUDA]==$JAX_VERSION"
fi
# The bench runs from the source tree, also with a Python the project is not installed in.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Each configuration has the GPU to itself: JAX's memory pool may take 90% of it, not 75%.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

CHECK_JAX='
import sys, jax
devices = jax.devices()
print(f"jax {jax.__version__}: {devices}")
if devices[0].platform != "gpu" and sys.argv[1] != "1":
    sys.exit(f"bench/accelerator.sh: JAX sees no GPU ({devices}); is the CUDA build of jax "
             "installed (pip show jax-cuda12-plugin) and does nvidia-smi list the GPU?")
'
CHECK_TORCH='
import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: {torch.cuda.is_available()}")
if not torch.cuda.is_available() and sys.argv[1] != "1":
    sys.exit(f"bench/accelerator.sh: torch {torch.__version__} sees no GPU; set TORCH_INDEX_URL "
             "to a CUDA build that this driver runs (nvidia-smi shows its CUDA version)")
'
if ((DRY_RUN)); then
  echo "+ check that $PYTHON's jax sees a GPU${DDCOLOR_SRC:+ and its torch CUDA}"
else
  "$PYTHON" -c "$CHECK_JAX" "$ALLOW_CPU"
  [[ -z "$DDCOLOR_SRC" ]] || "$PYTHON" -c "$CHECK_TORCH" "$ALLOW_CPU"
fi

run mkdir -p "$OUT_DIR"
if ((!DRY_RUN)); then
  nvidia-smi >"$OUT_DIR/nvidia-smi.txt" 2>&1 || true
  "$PYTHON" -m pip freeze >"$OUT_DIR/pip-freeze.txt" 2>&1 || true
fi

# bench/models.py for MODEL:SIZE names at every batch size; table to stdout and OUT/table.txt.
bench() {
  local models="$1"
  shift
  local configs=() model batch
  for model in $models; do
    for batch in $BATCHES; do configs+=("$model:$batch"); done
  done
  # shellcheck disable=SC2086 # the lists are words on purpose
  local command=("$PYTHON" bench/models.py --only "${configs[@]}" --modes $MODES
    --dtype $DTYPES --steps "$STEPS" --keep_going --json "$OUT_DIR/results.jsonl" "$@")
  if ((DRY_RUN)); then
    run "${command[@]}"
    echo "  | tee -a $OUT_DIR/table.txt"
  else
    "${command[@]}" | tee -a "$OUT_DIR/table.txt"
  fi
}

ddcolor_args=()
[[ -z "$DDCOLOR_SRC" ]] || ddcolor_args+=(--official_src "$DDCOLOR_SRC")
# shellcheck disable=SC2206 # KEY=VALUE words
[[ -z "$DDCOLOR_OVERRIDES" ]] || ddcolor_args+=(--overrides $DDCOLOR_OVERRIDES)
[[ -z "$DDCOLOR_MODELS" ]] || bench "$DDCOLOR_MODELS" ${ddcolor_args[@]+"${ddcolor_args[@]}"}
[[ -z "$OTHER_MODELS" ]] || bench "$OTHER_MODELS"
echo "results: $OUT_DIR/table.txt, $OUT_DIR/results.jsonl"
