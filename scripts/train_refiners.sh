#!/usr/bin/env bash
# Train the published refiners (the exact commands behind d3p_model/models/refiner/): main
# models for both 2D settings at T = 27 and 81, then the T = 27 ablations. Two runs at a
# time, one thread each (a 2-core machine); resumable: rerun after an interruption.
# Needs the lifter's prediction files: `d3p predict` first.
#   scripts/train_refiners.sh [CONFIG_NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
configs=${*:-h36m_sh2d_t27 h36m_gt2d_t27 h36m_sh2d_t81 h36m_gt2d_t81 \
  h36m_sh2d_t27_nocnd h36m_sh2d_t27_nodiff h36m_sh2d_t27_depth6 h36m_sh2d_t27_depth8}
mkdir -p runs
train_one() {
  out="d3p_model/models/refiner/$1"
  if [ -f "$out/model/weights.pt" ]; then echo "$1: already trained"; return; fi
  resume=""; [ -f "$out/checkpoint.pt" ] && resume="--resume"
  "$PY" -m d3p_model.cli train "$1" --out "$out" $resume > "runs/refiner_$1.log" 2>&1 \
    && echo "$1: done" || echo "$1: FAILED (runs/refiner_$1.log)"
}
export -f train_one; export PY
printf '%s\n' $configs | xargs -P 2 -I{} bash -c 'train_one {}'
