#!/usr/bin/env bash
# Regenerates docs/results/lifter_*.{md,json}: the base lifter on S9/S11 and on its
# held-out training-subject outputs, and the Savitzky-Golay smoother (tuned on the
# held-out training outputs only) beside it, for both 2D settings.
#   scripts/results_lifter.sh [gt2d] [sh2d]   (needs the Human3.6M folder: D3P_DATA or ../shared)
set -euo pipefail
cd "$(dirname "$0")/.."
D3P=${D3P:-".venv/bin/python -m d3p_model.cli"}
CACHE=${D3P_CACHE:-cache}
OUT=docs/results
mkdir -p "$OUT"
for setting in ${*:-gt2d sh2d}; do
  pred="$CACHE/predictions/$setting"
  if [ ! -f "$pred/test.npz" ] || [ ! -f "$pred/train_heldout.npz" ]; then
    $D3P predict --setting "$setting"
  fi
  $D3P smooth tune "$pred/train_heldout.npz" -o "$OUT/smoother_$setting.json" --sequence-stride 16
  $D3P smooth apply "$pred/test.npz" -o "$pred/test_smoothed.npz" --params "$OUT/smoother_$setting.json"
  $D3P evaluate "$pred/test.npz" "$pred/test_smoothed.npz" --labels lifter smoother \
    --json "$OUT/lifter_${setting}_test.json" --markdown "$OUT/lifter_${setting}_test.md"
  $D3P smooth apply "$pred/train_heldout.npz" -o "$pred/train_heldout_smoothed.npz" \
    --params "$OUT/smoother_$setting.json"
  $D3P evaluate "$pred/train_heldout.npz" "$pred/train_heldout_smoothed.npz" \
    --labels lifter smoother \
    --json "$OUT/lifter_${setting}_train_heldout.json" --markdown "$OUT/lifter_${setting}_train_heldout.md"
done
