#!/usr/bin/env bash
# The causal-mode model's choice and results, in one command (after it is trained:
# `d3p train h36m_sh2d_t27_causal --out d3p_model/models/refiner/h36m_sh2d_t27_causal`):
#   1. scripts/choose_default.py on its validation split: the correction threshold with do
#      no harm (--apply writes it into model.json) -> docs/results/causal_choice.md/.json
#   2. d3p export: its one-frame stream graph into the model directory (refiner_k2.onnx)
#   3. on the validation split (never S9/S11): the node's causal mode with the windowed
#      default against the causal model streamed, and lagged mode, through the node's own
#      window and stream logic -> docs/results/streaming_validation.md/.json
#   4. do no harm on S9/S11 (every 4th sequence) -> docs/results/do_no_harm_causal.md/.json
# Its S9/S11 streaming accuracy is a row of benchmarks/streaming_accuracy.py in
# benchmarks/run_all.sh. Environment: PYTHON (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NAME=h36m_sh2d_t27_causal
MODEL=d3p_model/models/refiner/$NAME/model

echo "== 1. correction threshold on validation (scripts/choose_default.py)"
"$PY" scripts/choose_default.py "$NAME" --name causal_choice --apply

echo "== 2. ONNX stream graph (d3p export)"
"$PY" -m d3p_model.cli export --model "$MODEL" --steps 2

echo "== 3. causal mode on validation: windowed default against the causal model"
"$PY" benchmarks/streaming_accuracy.py --validation --sequence-stride 2 --threads 1 \
    --modes causal stream lagged:13:9 --causal-model "$MODEL" \
    --output-dir docs/results --name streaming_validation

echo "== 4. do no harm on S9/S11 (scripts/results_do_no_harm.py)"
"$PY" scripts/results_do_no_harm.py "$MODEL" --name do_no_harm_causal
