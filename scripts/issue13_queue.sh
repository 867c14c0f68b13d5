#!/usr/bin/env bash
# The issue-13 training queue after the _keep models, two runs at a time, one thread each
# (resumable: rerun the same line after an interruption; finished runs are skipped).
#   nohup scripts/issue13_queue.sh > runs/issue13_queue.out 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
printf '%s\n' \
  "scripts/byol_simulation.sh train heldout" \
  "scripts/byol_simulation.sh train insample" \
  "scripts/byol_simulation.sh train gain" \
  "OMP_NUM_THREADS=1 scripts/train_refiners.sh h36m_sh2d_t81_keep" \
  "OMP_NUM_THREADS=1 scripts/train_refiners.sh h36m_sh2d_t27_blind_real" \
  "OMP_NUM_THREADS=1 scripts/train_refiners.sh h36m_sh2d_t27_blind_nodiff" \
  "OMP_NUM_THREADS=1 scripts/train_refiners.sh h36m_sh2d_t27_blind_depth6" \
  "OMP_NUM_THREADS=1 scripts/train_refiners.sh h36m_sh2d_t27_blind_depth8" \
  | xargs -P 2 -d '\n' -I{} bash -c '{}; echo "done: {}"'
