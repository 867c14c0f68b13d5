#!/usr/bin/env bash
# Train the published refiners (the exact commands behind d3p_model/models/refiner/), two
# runs at a time, one thread each (a 2-core machine); resumable: rerun after an interruption.
# The default list, in twelve phases (a phase starts when the one before it is done):
#   phase 1, from scratch (10 epochs each): h36m_gt2d_t27_blind (CND), h36m_gt2d_t27_blind_real
#            (the lifter's real errors), h36m_sh2d_t27_blind;
#   phase 2, the _keep models, which continue a phase-1 model (init_from) for 6 epochs:
#            h36m_sh2d_t27_keep (from h36m_sh2d_t27_blind), h36m_gt2d_t27_keep (from
#            h36m_gt2d_t27_blind_real);
#   phase 3, the _reproj models, which continue the _keep models for 6 epochs with the
#            2D-consistency input (model.reprojection_inputs; its embedding starts at zero):
#            h36m_sh2d_t27_reproj, h36m_gt2d_t27_reproj, and the control without that input
#            (same 6 epochs): h36m_gt2d_t27_keep12;
#   phase 4, the _reproj models 6 epochs longer: h36m_gt2d_t27_reproj12 (the published
#            ground-truth 2D model) and h36m_sh2d_t27_reproj12, continued by
#            h36m_sh2d_t27_rigid (the shipped default: jitter on half the windows);
#            h36m_sh2d_t27_causal, h36m_sh2d_t27_reproj made causal (the node's causal-mode
#            default; then scripts/results_causal.sh); h36m_sh2d_t81_reproj,
#            h36m_sh2d_t27_reproj with its window stretched to 81;
#   phase 5, longer windows: h36m_gt2d_t81_reproj (from h36m_gt2d_t27_reproj12) and
#            h36m_sh2d_t243_reproj (from h36m_sh2d_t81_reproj); h36m_sh2d_t27_rigid;
#   phase 6, trials (not published; scripts/results_trials.sh), the bone-length inputs
#            (model.bone_length_inputs), 8 epochs: h36m_sh2d_t27_bones (from
#            h36m_sh2d_t27_rigid), h36m_gt2d_t27_bones (from h36m_gt2d_t27_reproj12);
#   phase 7, trial, the output gate (model.output_gate), 8 epochs: h36m_sh2d_t27_gate (from
#            h36m_sh2d_t27_bones);
#   phase 8, trials, 32 epochs longer (decay 0.95; judged by the margin rule in
#            docs/refiner.md, "Longer training"): h36m_gt2d_t27_extended (from
#            h36m_gt2d_t27_bones, the output gate added), h36m_sh2d_t27_extended (from
#            h36m_sh2d_t27_gate);
#   phase 9, the ablations of h36m_sh2d_t27_blind, 4 epochs each (compared with it at its own
#            epoch 4 by scripts/results_ablation.py): _real, _nodiff, _depth6, _depth8;
#   phase 10, from scratch with subject S8 held out whole (data.validation_subjects), the
#            shipped recipe, 40 epochs: h36m_sh2d_t27_heldout_s8 (started 2026-12-07), and
#            the same with seed 1: h36m_sh2d_t27_heldout_s8_seed1;
#   phase 11, h36m_sh2d_t27_heldout_s8 32 epochs longer: h36m_sh2d_t27_heldout_s8_extended
#            (phases 10-11: docs/refiner.md, "A held-out subject");
#   phase 12, the control: phase 10's recipe from scratch with every subject (a tenth of the
#            takes held out), h36m_sh2d_t27_scratch.
# Needs the lifter's prediction files: `d3p predict` first. Then scripts/results_refiner.sh.
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
run_phase h36m_gt2d_t27_blind h36m_gt2d_t27_blind_real h36m_sh2d_t27_blind
run_phase h36m_sh2d_t27_keep h36m_gt2d_t27_keep
run_phase h36m_sh2d_t27_reproj h36m_gt2d_t27_reproj h36m_gt2d_t27_keep12
run_phase h36m_gt2d_t27_reproj12 h36m_sh2d_t27_reproj12 h36m_sh2d_t27_causal h36m_sh2d_t81_reproj
run_phase h36m_gt2d_t81_reproj h36m_sh2d_t243_reproj h36m_sh2d_t27_rigid
run_phase h36m_sh2d_t27_bones h36m_gt2d_t27_bones
run_phase h36m_sh2d_t27_gate
run_phase h36m_gt2d_t27_extended h36m_sh2d_t27_extended
run_phase h36m_sh2d_t27_blind_real h36m_sh2d_t27_blind_nodiff h36m_sh2d_t27_blind_depth6 \
  h36m_sh2d_t27_blind_depth8
run_phase h36m_sh2d_t27_heldout_s8 h36m_sh2d_t27_heldout_s8_seed1
run_phase h36m_sh2d_t27_heldout_s8_extended
run_phase h36m_sh2d_t27_scratch
