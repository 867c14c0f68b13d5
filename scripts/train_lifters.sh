#!/usr/bin/env bash
# Train every fold of the base lifter for one or both settings, from scratch: the exact
# commands that produced d3p_model/models/lifter/. One process per setting, one thread each,
# so the two settings share a 2-core machine (about 1 h 50 min for all 12 models).
# Resumable: rerun after an interruption; finished folds (weights.pt present) are skipped,
# an interrupted one continues from its checkpoint.
#   scripts/train_lifters.sh [gt2d] [sh2d]      (logs: runs/lifter_<setting>.log)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
settings=${*:-gt2d sh2d}
mkdir -p runs
for setting in $settings; do
  (
    for fold in all heldout_S1 heldout_S5 heldout_S6 heldout_S7 heldout_S8; do
      if [ -f "d3p_model/models/lifter/$setting/$fold/weights.pt" ]; then continue; fi
      OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli train-lifter "d3p_model/configs/lifter_$setting.yaml" \
        --fold "$fold" --threads 1 --resume
    done
  ) >> "runs/lifter_$setting.log" 2>&1 &
done
wait
