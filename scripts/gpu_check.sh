#!/usr/bin/env bash
# GPU check of the codecs: CuPy parity tests, the GPU benchmark at [65536, 128], the scaling
# grid, synthetic and captured KV rows, and a numpy-vs-CuPy byte parity report. Sized for one
# ~8-minute run (GPU_CHECK_BUDGET); every result and one log go to $OUT, also when a step fails.
#
#   bash scripts/gpu_check.sh            # on a machine with an NVIDIA GPU, from anywhere
#
# Environment (all optional):
#   OUT               results folder (default: data/results/bench/gpu_check)
#   PYTHON            interpreter (default: .venv/bin/python when it works, else python3)
#   KAKEYA_CAPTURED   captured K/V rows (default: .cache/bench/smollm2-135m_sotu_kv.npz; make it on
#                     a CPU machine with `.venv/bin/python benchmarks/capture_kv.py` and carry it)
#   GPU_CHECK_BUDGET  seconds for all steps together (default 450)
#   WHEELS            a folder of wheels to install from when CuPy (or numpy/scipy/pytest) is
#                     missing and no registry answers; shared/wheels, wheels and .whl are also tried
#   GPU_CHECK_DRYRUN  1: rehearse every step on the CPU at tiny sizes (no GPU, no CuPy needed)
#
# Files in $OUT (at most 8): gpu_check.log, status.tsv, bench_gpu_target.json,
# bench_gpu_grid.json, bench_gpu_captured.json, parity_gpu.json, summary.md.
# Exit status: 0 when every step passed, 1 otherwise (status.tsv lists each step).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
OUT="${OUT:-$REPO/data/results/bench/gpu_check}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/gpu_check.log"
STATUS="$OUT/status.tsv"
BUDGET="${GPU_CHECK_BUDGET:-450}"
CAPTURED="${KAKEYA_CAPTURED:-$REPO/.cache/bench/smollm2-135m_sotu_kv.npz}"
SITE="${TMPDIR:-/tmp}/kakeya-gpu-site"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export CUPY_CACHE_DIR="${CUPY_CACHE_DIR:-${TMPDIR:-/tmp}/kakeya-cupy-cache}"  # kernels compiled once, reused by every step
export KAKEYA_DEVICE=auto
FAILED=0
CUPY_OK=0
DEV=gpu
TARGET=(--dims 128 --rows 65536)
GRID=()
CAPT_ROWS=(4096 16384 65536)
CODECS=()
if [[ "${GPU_CHECK_DRYRUN:-0}" == 1 ]]; then
  DEV=cpu
  TARGET=(--dims 64 --rows 512)
  GRID=(--dims 32 64 --rows 256 512)
  CAPT_ROWS=(256 512)
  CODECS=(--codecs kakeya identity)
fi

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  if [[ -x "$REPO/.venv/bin/python" ]] && "$REPO/.venv/bin/python" -c "import numpy" >/dev/null 2>&1; then
    echo "$REPO/.venv/bin/python"; return
  fi
  command -v python3 || command -v python || echo python3
}
PY="$(pick_python)"

record() {  # record NAME STATUS SECONDS
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATUS"
  echo "== $1: $2 (${3}s; ${SECONDS}s of ${BUDGET}s used)"
  [[ "$2" == ok ]] || FAILED=1
}

step() {  # step NAME MAX_SECONDS CMD...: run CMD under a timeout that also respects the budget
  local name="$1" max="$2"
  shift 2
  local left=$((BUDGET - SECONDS))
  local limit=$((max < left ? max : left))
  if ((limit < 15)); then
    record "$name" "skipped-budget" 0
    return 0
  fi
  echo
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  local st=ok
  if ((rc == 124 || rc == 137)); then st=timeout; elif ((rc != 0)); then st="failed-rc$rc"; fi
  record "$name" "$st" $((SECONDS - t0))
}

check_imports() {
  timeout 120 "$PY" - <<'EOF'
import numpy, scipy, pytest, cupy
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0, "no CUDA device"
assert int(cupy.arange(10).sum()) == 45
props = cupy.cuda.runtime.getDeviceProperties(0)
print(f"cupy {cupy.__version__} on {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}, "
      f"numpy {numpy.__version__}, scipy {scipy.__version__}, pytest {pytest.__version__}")
EOF
}

registry_up() {  # ask pip's own configured index (no host name written here) whether it answers
  timeout 20 "$PY" -m pip index versions pip >/dev/null 2>&1
}

install_deps() {  # install what does not import: from the registry when it answers, else carried wheels
  local missing=() pair mod pkg
  local cupy_pin
  cupy_pin="$(grep -v '^\s*#' requirements-gpu.txt | grep -m1 cupy || echo 'cupy-cuda13x')"
  for pair in "cupy:$cupy_pin" numpy:numpy scipy:scipy pytest:pytest; do
    mod="${pair%%:*}"; pkg="${pair#*:}"
    "$PY" -c "import $mod" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    echo "numpy, scipy, pytest and cupy import, but CuPy cannot use a GPU (driver, CUDA version?)"
    return 1
  fi
  echo "missing: ${missing[*]}"
  mkdir -p "$SITE"
  export PYTHONPATH="$SITE:$PYTHONPATH"
  if registry_up; then
    echo "registry reachable: pip install --target $SITE ${missing[*]}"
    timeout 300 "$PY" -m pip install --quiet --no-cache-dir --target "$SITE" "${missing[@]}" && return 0
  fi
  local names=() m
  for m in "${missing[@]}"; do  # cupy-cuda13x[ctk]==14.2.0 -> cupy-cuda13x (the ctk wheels are optional offline)
    m="${m%%==*}"
    names+=("${m%%\[*}")
  done
  local dir
  for dir in ${WHEELS:+"$WHEELS"} shared/wheels wheels .whl; do
    compgen -G "$dir/*.whl" >/dev/null || continue
    echo "no registry: installing ${names[*]} from carried wheels in $dir"
    if timeout 300 "$PY" -m pip install --quiet --no-index --no-cache-dir --no-deps --find-links "$dir" \
        --target "$SITE" "${names[@]}" && check_imports; then
      return 0
    fi
    echo "with --no-deps that was not enough; installing with the dependencies found in $dir"
    timeout 300 "$PY" -m pip install --quiet --no-index --no-cache-dir --find-links "$dir" --upgrade \
      --target "$SITE" "${names[@]}" && return 0
  done
  echo "no registry and no carried wheels for ${names[*]} (looked in ${WHEELS:-} shared/wheels wheels .whl)"
  return 1
}

main() {
  : >"$STATUS"
  echo "== gpu_check $(date -u +%FT%TZ) in $REPO, python $PY, budget ${BUDGET}s, OUT=$OUT"
  git -C "$REPO" rev-parse HEAD 2>/dev/null || echo "(no git)"
  timeout 30 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.memory --format=csv 2>&1 \
    || echo "(nvidia-smi unavailable)"
  "$PY" --version

  local t0=$SECONDS
  if [[ "$DEV" == cpu ]]; then
    echo "GPU_CHECK_DRYRUN=1: every step on the CPU at tiny sizes"
    CUPY_OK=1
    record deps ok 0
  elif check_imports; then
    CUPY_OK=1
    record deps ok $((SECONDS - t0))
  elif install_deps && check_imports; then
    CUPY_OK=1
    record deps ok $((SECONDS - t0))
  else
    record deps failed $((SECONDS - t0))
  fi

  if ((CUPY_OK == 0)); then
    for s in pytest-gpu bench-target bench-grid bench-captured parity-report; do record "$s" skipped-no-cupy 0; done
  else
    # Parity tests first: they compile most CuPy kernels into CUPY_CACHE_DIR for the later steps.
    step pytest-gpu 150 "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs tests/test_parity.py tests/test_bench.py
    # The issue's GPU target shape, every default codec, the default kakeya spec first.
    step bench-target 80 "$PY" -m kakeya_lib bench --device "$DEV" "${TARGET[@]}" "${CODECS[@]}" --repeat 10 \
      --max-time 4 --time-limit 60 --json "$OUT/bench_gpu_target.json"
    # The scaling grid (D 64/128/256, N 512..65536): largest sizes are dropped if time runs out.
    step bench-grid 130 "$PY" -m kakeya_lib bench --device "$DEV" "${GRID[@]}" "${CODECS[@]}" --repeat 5 \
      --max-time 2 --no-stages --time-limit 100 --json "$OUT/bench_gpu_grid.json"
    if [[ -f "$CAPTURED" ]]; then
      step bench-captured 60 "$PY" -m kakeya_lib bench --device "$DEV" --data captured "$CAPTURED" "${CODECS[@]}" \
        --rows "${CAPT_ROWS[@]}" --repeat 5 --max-time 2 --time-limit 40 --json "$OUT/bench_gpu_captured.json"
    else
      echo "no captured rows at $CAPTURED: make them on a CPU machine with benchmarks/capture_kv.py and carry them"
      record bench-captured missing-captured-file 0
    fi
    local parity=("$PY" benchmarks/gpu_parity.py --json "$OUT/parity_gpu.json")
    [[ -f "$CAPTURED" ]] && parity+=(--captured "$CAPTURED")
    if [[ "$DEV" == gpu ]]; then
      step parity-report 60 "${parity[@]}"
    else
      record parity-report skipped-dryrun 0
    fi
  fi

  local files=()
  for f in "$OUT"/bench_gpu_target.json "$OUT"/bench_gpu_grid.json "$OUT"/bench_gpu_captured.json; do
    [[ -f "$f" ]] && files+=("$f")
  done
  if ((${#files[@]})); then
    timeout 60 "$PY" benchmarks/report.py "${files[@]}" >"$OUT/summary.md" 2>&1 || echo "(report failed; see summary.md)"
    cat "$OUT/summary.md"
  fi
  echo
  echo "== steps (name, status, seconds):"
  cat "$STATUS"
  echo "== gpu_check done in ${SECONDS}s: $([[ $FAILED == 0 ]] && echo 'all steps ok' || echo 'SOME STEPS FAILED')"
  return "$FAILED"
}

rc=0
main "$@" 2>&1 | tee "$LOG" || rc=$?
exit "$rc"
