#!/usr/bin/env bash
# Models trained and measured but not published (issue 13: the bone-length inputs, the output
# gate, longer training), on the same protocol as the published ones, into docs/results/:
#   1. validation (scripts/choose_default.py, no --apply): each trial beside the published
#      model of its setting, rows reused from the runs that measured them (their commands are
#      recorded on the page) -> trial_choice_<setting>.md/.json; the longer-trained
#      _extended models by the rule with margins fixed before they were measured
#      (docs/refiner.md, "Longer training") -> extended_choice_<setting>.md/.json, and each
#      _extended model's stride and threshold at that margin written into its model.json
#   2. S9/S11 per action: d3p refine + d3p evaluate, lifter against the trial model
#      -> trial_<model>.md/.json
#   3. do no harm on S9/S11 (scripts/results_do_no_harm.py) -> trial_do_no_harm_<model>.md/.json
#   4. the unseen temporal-conv lifter refined by each detected-2D trial -> trial_unseen_<model>.*
# Needs runs/choice/choice_<model>.json from `scripts/choose_default.py <model> --docs
# runs/choice --name choice_<model>` (about 10 min each on one thread) and the prediction files
# (`d3p predict`). Environment: PYTHON, D3P_CACHE, D3P_RESULTS as scripts/results_refiner.sh.
#   scripts/results_trials.sh [MODEL ...]   (steps 2-4 for just these trials)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
CACHE=${D3P_CACHE:-cache}
OUT=${D3P_RESULTS:-docs/results}
MODELS=d3p_model/models/refiner
export OMP_NUM_THREADS=1

trials=("$@")
if [ ${#trials[@]} -eq 0 ]; then   # step 1 only when no trial is named
  echo "== 1. validation"
  "$PY" scripts/choose_default.py h36m_gt2d_t27_reproj12 h36m_gt2d_t27_bones --docs "$OUT" \
    --name trial_choice_gt2d --reuse "$OUT/model_choice_gt2d.json" \
    runs/choice/choice_h36m_gt2d_t27_bones.json
  "$PY" scripts/choose_default.py h36m_sh2d_t27_rigid h36m_sh2d_t27_bones h36m_sh2d_t27_gate \
    --docs "$OUT" --name trial_choice_sh2d --reuse "$OUT/default_choice.json" \
    runs/choice/choice_h36m_sh2d_t27_bones.json runs/choice/choice_h36m_sh2d_t27_gate.json
  for setting in gt2d sh2d; do
    incumbent=h36m_gt2d_t27_reproj12 published=model_choice_gt2d
    [ "$setting" = sh2d ] && incumbent=h36m_sh2d_t27_rigid published=default_choice
    "$PY" scripts/choose_default.py "$incumbent" "h36m_${setting}_t27_extended" \
      --incumbent "$incumbent" --harm-margin-mm 1.0 --gain-margin-mm 0.3 --docs "$OUT" \
      --name "extended_choice_$setting" --reuse "$OUT/$published.json" \
      "runs/choice/choice_h36m_${setting}_t27_extended.json"
    # the challenger's own stride and threshold at that margin into its model.json (a run of
    # its own: --apply on the page above would rewrite the incumbent's published settings too)
    "$PY" scripts/choose_default.py "h36m_${setting}_t27_extended" --harm-margin-mm 1.0 \
      --docs runs/choice --name "applied_h36m_${setting}_t27_extended" --apply \
      --reuse "runs/choice/choice_h36m_${setting}_t27_extended.json"
  done
fi

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
unseen() {   # model: the detected-2D trial refines the temporal-conv lifter's outputs
  local name=$1 unseen="$CACHE/predictions/sh2d_tcn/test.npz"
  local refined="$CACHE/refined/${1}_unseen_tcn.npz"
  [ -f "$refined" ] || "$PY" -m d3p_model.cli refine "$unseen" --model "$MODELS/$name/model" \
    -o "$refined" --threads 1 --no-progress
  "$PY" -m d3p_model.cli evaluate "$unseen" "$refined" \
    --labels "temporal-conv lifter (unseen)" "$name" \
    --json "$OUT/trial_unseen_$name.json" --markdown "$OUT/trial_unseen_$name.md"
}
# (h36m_sh2d_t27_extended, named by its margin rule, ships: scripts/results_refiner.sh)
[ ${#trials[@]} -gt 0 ] || trials=(h36m_gt2d_t27_bones h36m_sh2d_t27_gate h36m_gt2d_t27_extended)
echo "== 2, 3. S9/S11 and do no harm, two trials at a time"
pids=()
for name in "${trials[@]}"; do
  setting=${name#h36m_}; setting=${setting%%_*}
  trial "$setting" "$name" &
  pids+=($!)
  if [ ${#pids[@]} -eq 2 ]; then wait "${pids[0]}"; wait "${pids[1]}"; pids=(); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done   # a failed trial fails the script

echo "== 4. the unseen estimator, detected-2D trials"
for name in "${trials[@]}"; do
  case "$name" in h36m_sh2d_*) unseen "$name" ;; esac
done
