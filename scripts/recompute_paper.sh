#!/usr/bin/env bash
# Recompute every paper-profile cell at one commit, from a clean tree, into a fresh store; resumable.
#
#   scripts/recompute_paper.sh run [COMMIT]      compute (COMMIT defaults to HEAD)
#   scripts/recompute_paper.sh collect [COMMIT]  copy the cells finished so far into data/results/
#
# `run` checks COMMIT out into a git worktree (so edits here never reach the cells' provenance),
# seeds a fresh store with the cells data/results/ already holds at COMMIT (so a stopped run
# resumes where it was), then runs the exp-stages notebook and every paper sweep file against that
# store (KAKEYA_RESULTS_DIR / --store); the calibration caches of the worktree start empty. Cells
# are copied back by `collect`, which replaces a committed cell at the same path; cells the sweep
# files no longer name stay on disk but never reach a table (the render reads only named cells).
#
# Environment: RECOMPUTE_DIR (default .cache/recompute) holds the worktree and the store;
# WORKERS (default 2) Dask worker processes. About 20 CPU-hours on the paper grid.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="$REPO/.venv/bin/python"
action="${1:-}"
commit="$(git -C "$REPO" rev-parse "${2:-HEAD}")"
base="${RECOMPUTE_DIR:-$REPO/.cache/recompute}"
tree="$base/tree-${commit:0:10}"
store="$base/store-${commit:0:10}"

copy_cells() {  # $1: source store root, $2: destination store root
  "$PY" -c 'import sys; from kakeya_lib.store import Store
copied = Store(sys.argv[2]).copy_cells_from(Store(sys.argv[1]), sys.argv[3], profile="paper")
print(f"{len(copied)} cell(s) copied from {sys.argv[1]} to {sys.argv[2]}")' "$1" "$2" "$commit"
}

case "$action" in
  run)
    test -x "$PY" || { echo "no $PY: run 'make setup' first" >&2; exit 1; }
    mkdir -p "$base"
    if [ ! -d "$tree" ]; then git -C "$REPO" worktree add --detach "$tree" "$commit"; fi
    test -z "$(git -C "$tree" status --porcelain --untracked-files=no)" || {
      echo "$tree has local changes: its cells would be marked dirty" >&2; exit 1; }
    copy_cells "$REPO/data/results" "$store"
    cd "$tree"
    export PYTHONPATH="$tree" KAKEYA_RESULTS_DIR="$store" TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
    export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    # the notebook skips its cells already in the store (seconds when all are)
    "$REPO/.venv/bin/papermill" --no-progress-bar --kernel python3 notebooks/exp-stages.ipynb \
      "$base/exp-stages-${commit:0:10}.ipynb" -f notebooks/params/paper/exp-stages.yaml -p profile paper
    "$PY" -m kakeya_lib sweep sweeps/paper-*.yaml --executor dask --workers "${WORKERS:-2}" --store "$store" --no-progress
    echo "every cell computed at ${commit:0:10}; copy them with: $0 collect $commit"
    ;;
  collect)
    copy_cells "$store" "$REPO/data/results"
    ;;
  *)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
