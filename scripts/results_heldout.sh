#!/usr/bin/env bash
# The held-out-subject experiment (docs/refiner.md, "A held-out subject"): three models trained
# with S8 held out whole (scripts/train_refiners.sh, phases 10-11), judged on S8 by the rule
# written before they were measured, then measured on S9/S11 to see whether the S8 verdict
# carries:
#   1. each model alone on S8 (scripts/choose_default.py, harm margin 1.0 mm, about 10 min
#      each on one thread; skipped where runs/choice/choice_<model>.json exists), its stride
#      and threshold written into its model.json (--apply)
#   2. the three side by side -> docs/results/heldout_s8_choice.md/.json (rows reused)
#   3. S9/S11 per action, do no harm and the unseen lifter (scripts/results_trials.sh); and
#      S9/S11 per action at threshold 0 (d3p refine --correction-threshold 0) -> trial_threshold0_*
#   4. the verdict -> docs/results/heldout_s8.md/.json (scripts/results_heldout.py)
# Environment: PYTHON, D3P_CACHE, D3P_RESULTS as scripts/results_refiner.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${D3P_RESULTS:-docs/results}
export OMP_NUM_THREADS=1
models=(h36m_sh2d_t27_heldout_s8 h36m_sh2d_t27_heldout_s8_seed1
        h36m_sh2d_t27_heldout_s8_extended)
mkdir -p runs/choice

echo "== 1. each model on S8"
for name in "${models[@]}"; do
  [ -f "runs/choice/choice_$name.json" ] || "$PY" scripts/choose_default.py "$name" \
    --harm-margin-mm 1.0 --apply --docs runs/choice --name "choice_$name"
done
echo "== 2. side by side"
"$PY" scripts/choose_default.py "${models[@]}" --harm-margin-mm 1.0 --docs "$OUT" \
  --name heldout_s8_choice --reuse $(printf 'runs/choice/choice_%s.json ' "${models[@]}")
echo "== 3. S9/S11"
D3P_RESULTS="$OUT" PYTHON="$PY" scripts/results_trials.sh "${models[@]}"
echo "== 3b. S9/S11 without the correction threshold (what each model does on its own)"
for name in "${models[@]}"; do
  refined="${D3P_CACHE:-cache}/refined/sh2d/${name}_threshold0.npz"
  [ -f "$refined" ] || "$PY" -m d3p_model.cli refine "${D3P_CACHE:-cache}/predictions/sh2d/test.npz" \
    --model "d3p_model/models/refiner/$name/model" --correction-threshold 0 -o "$refined" \
    --threads 1 --no-progress
  "$PY" -m d3p_model.cli evaluate "${D3P_CACHE:-cache}/predictions/sh2d/test.npz" "$refined" \
    --labels lifter "$name" --json "$OUT/trial_threshold0_$name.json" \
    --markdown "$OUT/trial_threshold0_$name.md"
done
echo "== 4. the verdict"
"$PY" scripts/results_heldout.py --results "$OUT"
