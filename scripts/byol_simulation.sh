#!/usr/bin/env bash
# Bring your own lifter, simulated (issue 13): what a refiner trained on a PRETRAINED
# lifter's outputs on its own training subjects does, with the base lifter standing in.
#   heldout   d3p train-for-lifter on the base lifter's held-out outputs (the honest case)
#   insample  the same on its in-sample outputs (`d3p predict --split train_insample`: the
#             all-subjects model on the subjects it trained on; 39 mm instead of 67 mm)
#   gain      in-sample, with --lifter-test-mpjpe 62.7 (the lifter's published S9/S11 error,
#             what a user of a public model knows): the training error is scaled up to it
# All from scratch (the shipped model was trained on this lifter's held-out outputs, so
# starting from it would leak), on the shipped recipe, 6 epochs. Then each refines the S9/S11
# test outputs: docs/results/byol_simulation.{md,json}.
#   scripts/byol_simulation.sh [train [RUN]|evaluate]  (default: both; RUN one of heldout,
#                                                      insample, gain; training is resumable)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${D3P_CACHE:-cache}
RECIPE=${RECIPE:-d3p_model/configs/h36m_sh2d_t27_keep.yaml}
OUT=runs/byol_sim
what=${1:-all}
common=(--recipe "$RECIPE" --from-scratch --epochs 6 --no-export --no-progress
        --set optim.lr=1.0e-3 --set optim.lr_decay=0.85)
[ -f "$CACHE/predictions/sh2d/train_insample.npz" ] || \
  "$PY" -m d3p_model.cli predict --setting sh2d --split train_insample --threads 1
run() {  # name predictions [extra...]
  name=$1; shift; file=$1; shift
  [ -f "$OUT/$name/model/weights.pt" ] && { echo "$name: trained"; return; }
  resume=""; [ -f "$OUT/$name/checkpoint.pt" ] && resume="--resume"
  OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli train-for-lifter "$file" --out "$OUT/$name" \
    "${common[@]}" $resume "$@" > "$OUT/$name.log" 2>&1 || true   # 1 = harm found: reported
}
mkdir -p "$OUT"
one() {
  case $1 in
    heldout) run heldout "$CACHE/predictions/sh2d/train_heldout.npz";;
    insample) run insample "$CACHE/predictions/sh2d/train_insample.npz";;
    gain) run gain "$CACHE/predictions/sh2d/train_insample.npz" --lifter-test-mpjpe 62.7;;
    *) echo "unknown run $1" >&2; exit 2;;
  esac
}
if [ "$what" = train ] && [ $# -ge 2 ]; then one "$2"; exit 0; fi
if [ "$what" != evaluate ]; then
  one heldout & one insample & wait
  one gain
fi
[ "$what" = train ] && exit 0
for name in heldout insample gain; do
  OMP_NUM_THREADS=1 "$PY" -m d3p_model.cli refine "$CACHE/predictions/sh2d/test.npz" \
    --model "$OUT/$name/model" -o "$CACHE/refined/byol_$name.npz" --threads 1 --no-progress
done
"$PY" -m d3p_model.cli evaluate "$CACHE/predictions/sh2d/test.npz" \
  "$CACHE/refined/byol_heldout.npz" "$CACHE/refined/byol_insample.npz" \
  "$CACHE/refined/byol_gain.npz" \
  --labels "base lifter (sh2d)" "trained on held-out outputs" "trained on in-sample outputs" \
  "in-sample, --lifter-test-mpjpe 62.7" \
  --json docs/results/byol_simulation.json --markdown docs/results/byol_simulation.md
