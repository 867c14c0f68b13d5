#!/usr/bin/env bash
# The refiner's published results, in one command (after the refiners are trained:
# scripts/train_refiners.sh), in this order:
#   1. scripts/results_refiner.py: S9/S11 per action for each setting and window's published
#      model (MAIN_RUNS in that script), the targets stated met or missed, figures
#      -> docs/results/refiner.md/.json, refiner_<setting>.json, refiner_<setting>_t<T>.*,
#         figures/refiner_<setting>_t<T>_*.png
#   2. scripts/results_do_no_harm.py on each setting's model at each window
#      -> docs/results/do_no_harm_<setting>.md/.json (T = 27), do_no_harm_<setting>_t<T>.*;
#      and the detected-2D T = 27 model fed ground-truth 2D keypoints
#      -> docs/results/do_no_harm_sh2d_gt2d_keypoints.md/.json
#   3. the estimator no refiner saw: the temporal-conv lifter's detected-2D test outputs
#      (cache/predictions/sh2d_tcn/test.npz, d3p_model/configs/lifter_sh2d_tcn.yaml) refined
#      by the sh2d T = 27 model -> docs/results/refiner_unseen.md/.json
#   4. scripts/results_ablation.py -> docs/results/ablation_h36m_sh2d_t27_blind.md/.json
#   scripts/results_refiner.sh [results_refiner.py options, e.g. --jobs 2]
# Environment: PYTHON (default .venv/bin/python), D3P_CACHE (default cache), D3P_RESULTS
# (pages; default docs/results), D3P_MODELS (folders holding the model dirs; default
# results_refiner.py's: d3p_model/models/refiner then runs). What is missing (a model not
# trained yet, the unseen lifter's predictions) is said and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${D3P_CACHE:-cache}
OUT=${D3P_RESULTS:-docs/results}
models=()
if [ -n "${D3P_MODELS:-}" ]; then read -r -a roots <<< "$D3P_MODELS"; models=(--models "${roots[@]}"); fi

echo "== 1. per-action pages, targets, figures (scripts/results_refiner.py)"
"$PY" scripts/results_refiner.py --cache "$CACHE" --docs "$OUT" "${models[@]}" "$@"

# the directory of a setting's published model at window T (the script's MAIN_RUNS), or ""
model_dir() { "$PY" scripts/results_refiner.py --cache "$CACHE" "${models[@]}" \
                --print-model "$1" "$2" || true; }
model_name() { case "$1" in */model) basename "$(dirname "$1")" ;; *) basename "$1" ;; esac; }

echo "== 2. do no harm (scripts/results_do_no_harm.py)"
for setting in gt2d sh2d; do
  for window in 27 81 243; do
    name="do_no_harm_$setting"; [ "$window" = 27 ] || name="${name}_t$window"
    dir=$(model_dir "$setting" "$window")
    predictions="$CACHE/predictions/$setting/test.npz"
    if [ -z "$dir" ] || [ ! -f "$predictions" ]; then
      echo "$name: skipped (no model or no $predictions)"; continue
    fi
    OMP_NUM_THREADS=1 "$PY" scripts/results_do_no_harm.py "$dir" --predictions "$predictions" \
      --docs "$OUT" --name "$name"
  done
done

# What moves a correct skeleton with detected 2D: the detections, or the refiner's own prior?
# The detected-2D model fed the ground-truth 2D keypoints instead (the same 3D inputs).
dir=$(model_dir sh2d 27)
gt2d_keypoints="$CACHE/predictions/gt2d/test.npz"
if [ -n "$dir" ] && [ -f "$gt2d_keypoints" ]; then
  OMP_NUM_THREADS=1 "$PY" scripts/results_do_no_harm.py "$dir" --predictions "$gt2d_keypoints" \
    --docs "$OUT" --name do_no_harm_sh2d_gt2d_keypoints
else
  echo "do_no_harm_sh2d_gt2d_keypoints: skipped (no sh2d T = 27 model or no $gt2d_keypoints)"
fi

echo "== 3. the unseen estimator (temporal-conv lifter, detected 2D)"
unseen="$CACHE/predictions/sh2d_tcn/test.npz"
dir=$(model_dir sh2d 27)
if [ -z "$dir" ] || [ ! -f "$unseen" ]; then
  echo "refiner_unseen: skipped (no sh2d T = 27 model or no $unseen: train and predict with" \
       "d3p_model/configs/lifter_sh2d_tcn.yaml)"
else
  name=$(model_name "$dir")
  mkdir -p "$CACHE/refined"
  refined="$CACHE/refined/${name}_unseen_tcn.npz"
  OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli refine "$unseen" --model "$dir" -o "$refined" \
    --threads 1 --no-progress
  "$PY" -m d3p_model.cli evaluate "$unseen" "$refined" \
    --labels "temporal-conv lifter (unseen)" "$name" \
    --json "$OUT/refiner_unseen.json" --markdown "$OUT/refiner_unseen.md"
fi

echo "== 4. ablations (scripts/results_ablation.py)"
"$PY" scripts/results_ablation.py --docs "$OUT"
