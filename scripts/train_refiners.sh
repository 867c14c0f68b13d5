#!/usr/bin/env bash
# Train the published refiners (the exact commands behind d3p_model/models/refiner/), two
# runs at a time, one thread each (a 2-core machine); resumable: rerun after an interruption.
#   phase 1: the 1-epoch models of both 2D settings at T = 27 and 81 (~10-13 min each beside
#            a second run), the T = 243 models (~30 min each, from scratch) and the
#            T = 27 ablations of both settings (same budget: the ablation table compares
#            like with like);
#   phase 2: the shipped models, h36m_<setting>_t<T>_long, which continue the phase-1
#            models for 20 more epochs (init_from; ~34 min each beside a second run).
# Needs the lifter's prediction files: `d3p predict` first.
#   scripts/train_refiners.sh [CONFIG_NAME ...]      (just these, in one phase)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p runs
train_one() {
  out="d3p_model/models/refiner/$1"
  if [ -f "$out/model/weights.pt" ]; then echo "$1: already trained"; return; fi
  resume=""; [ -f "$out/checkpoint.pt" ] && resume="--resume"
  "$PY" -m d3p_model.cli train "$1" --out "$out" $resume > "runs/refiner_$1.log" 2>&1 \
    && echo "$1: done" || echo "$1: FAILED (runs/refiner_$1.log)"
}
export -f train_one; export PY
run_phase() { printf '%s\n' "$@" | xargs -P 2 -I{} bash -c 'train_one {}'; }
if [ $# -gt 0 ]; then run_phase "$@"; exit; fi
run_phase h36m_sh2d_t27 h36m_gt2d_t27 h36m_sh2d_t81 h36m_gt2d_t81 \
  h36m_sh2d_t243 h36m_gt2d_t243 h36m_sh2d_t27_nocnd h36m_sh2d_t27_nodiff h36m_sh2d_t27_depth6 h36m_sh2d_t27_depth8 \
  h36m_gt2d_t27_nocnd h36m_gt2d_t27_nodiff h36m_gt2d_t27_depth6 h36m_gt2d_t27_depth8
run_phase h36m_sh2d_t27_long h36m_sh2d_t81_long h36m_gt2d_t27_long h36m_gt2d_t81_long
