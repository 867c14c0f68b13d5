#!/usr/bin/env bash
# Models trained and measured but not published (issue 13: the bone-length inputs and the
# output gate), on the same protocol as the published ones, into docs/results/trial_*:
#   1. validation (scripts/choose_default.py, no --apply): each trial beside the published
#      model of its setting, rows reused from the runs that measured them (their commands are
#      recorded on the page) -> trial_choice_<setting>.md/.json
#   2. S9/S11 per action: d3p refine + d3p evaluate, lifter against the trial model
#      -> trial_<model>.md/.json
#   3. do no harm on S9/S11 (scripts/results_do_no_harm.py) -> trial_do_no_harm_<model>.md/.json
#   4. the unseen temporal-conv lifter refined by the detected-2D trial -> trial_unseen_<model>.*
# Needs runs/choice/choice_<model>.json from `scripts/choose_default.py <model> --docs
# runs/choice --name choice_<model>` (about 10 min each on one thread) and the prediction files
# (`d3p predict`). Environment: PYTHON, D3P_CACHE, D3P_RESULTS as scripts/results_refiner.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${D3P_CACHE:-cache}
OUT=${D3P_RESULTS:-docs/results}
MODELS=d3p_model/models/refiner
export OMP_NUM_THREADS=1

echo "== 1. validation"
"$PY" scripts/choose_default.py h36m_gt2d_t27_reproj12 h36m_gt2d_t27_bones --docs "$OUT" \
  --name trial_choice_gt2d --reuse "$OUT/model_choice_gt2d.json" \
  runs/choice/choice_h36m_gt2d_t27_bones.json
"$PY" scripts/choose_default.py h36m_sh2d_t27_rigid h36m_sh2d_t27_bones h36m_sh2d_t27_gate \
  --docs "$OUT" --name trial_choice_sh2d --reuse "$OUT/default_choice.json" \
  runs/choice/choice_h36m_sh2d_t27_bones.json runs/choice/choice_h36m_sh2d_t27_gate.json

trial() {   # setting model
  local setting=$1 name=$2 predictions="$CACHE/predictions/$1/test.npz"
  local refined="$CACHE/refined/$1/$2.npz"
  mkdir -p "$CACHE/refined/$setting"
  [ -f "$refined" ] || "$PY" -m d3p_model.cli refine "$predictions" --model "$MODELS/$name/model" \
    -o "$refined" --threads 1 --no-progress
  "$PY" -m d3p_model.cli evaluate "$predictions" "$refined" --labels lifter "$name" \
    --json "$OUT/trial_$name.json" --markdown "$OUT/trial_$name.md"
  "$PY" scripts/results_do_no_harm.py "$MODELS/$name/model" --predictions "$predictions" \
    --docs "$OUT" --name "trial_do_no_harm_$name"
}
echo "== 2, 3. S9/S11 and do no harm"
trial gt2d h36m_gt2d_t27_bones &
gt2d_trial=$!
trial sh2d h36m_sh2d_t27_gate
wait "$gt2d_trial"   # its status: a failed background trial fails the script

echo "== 4. the unseen estimator"
unseen="$CACHE/predictions/sh2d_tcn/test.npz"
refined="$CACHE/refined/h36m_sh2d_t27_gate_unseen_tcn.npz"
[ -f "$refined" ] || "$PY" -m d3p_model.cli refine "$unseen" --model "$MODELS/h36m_sh2d_t27_gate/model" \
  -o "$refined" --threads 1 --no-progress
"$PY" -m d3p_model.cli evaluate "$unseen" "$refined" \
  --labels "temporal-conv lifter (unseen)" h36m_sh2d_t27_gate \
  --json "$OUT/trial_unseen_h36m_sh2d_t27_gate.json" --markdown "$OUT/trial_unseen_h36m_sh2d_t27_gate.md"
