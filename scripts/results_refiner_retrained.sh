#!/usr/bin/env bash
# Issue 13, first retraining on the new base lifter: every model named here is refined over
# the S9/S11 test predictions of its 2D setting, scored beside the lifter, and given the
# do-no-harm inputs; where the unseen temporal-conv lifter's test predictions exist
# (cache/predictions/<setting>_tcn/test.npz), those are refined too. Writes
# docs/results/refiner_retrained_<model>, refiner_unseen_<model> and do_no_harm_<setting>
# (.md and .json).
#   scripts/results_refiner_retrained.sh [MODEL_NAME ...]   (default: the list below)
# Models live in d3p_model/models/refiner/<name>/ (trained by scripts/train_refiners.sh <name>).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${D3P_CACHE:-cache}
OUT=docs/results
models=${*:-h36m_gt2d_t27_blind h36m_gt2d_t27_blind_real h36m_sh2d_t27_blind}
mkdir -p "$CACHE/refined"
declare -A by_setting
for name in $models; do
  dir="d3p_model/models/refiner/$name/model"
  [ -f "$dir/weights.pt" ] || { echo "$name: not trained, skipped"; continue; }
  setting=$(echo "$name" | sed -E 's/^h36m_([a-z0-9]+)_t.*/\1/')
  refined="$CACHE/refined/${name}_test.npz"
  OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli refine "$CACHE/predictions/$setting/test.npz" \
    --model "$dir" -o "$refined" --threads 1 --no-progress
  "$PY" -m d3p_model.cli evaluate "$CACHE/predictions/$setting/test.npz" "$refined" \
    --labels lifter "$name" --json "$OUT/refiner_retrained_$name.json" \
    --markdown "$OUT/refiner_retrained_$name.md"
  by_setting[$setting]="${by_setting[$setting]:-} $dir"
  # the estimator it never saw: the temporal-conv lifter's test outputs (lifter_sh2d_tcn.yaml)
  unseen="$CACHE/predictions/${setting}_tcn/test.npz"
  if [ -f "$unseen" ]; then
    OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli refine "$unseen" --model "$dir" \
      -o "$CACHE/refined/${name}_unseen_tcn.npz" --threads 1 --no-progress
    "$PY" -m d3p_model.cli evaluate "$unseen" "$CACHE/refined/${name}_unseen_tcn.npz" \
      --labels "temporal-conv lifter (unseen)" "$name" \
      --json "$OUT/refiner_unseen_$name.json" --markdown "$OUT/refiner_unseen_$name.md"
  fi
done
for setting in "${!by_setting[@]}"; do
  OMP_NUM_THREADS=1 "$PY" scripts/results_do_no_harm.py ${by_setting[$setting]} \
    --predictions "$CACHE/predictions/$setting/test.npz" --name "do_no_harm_$setting"
done
