#!/usr/bin/env bash
# The published performance numbers (docs/performance.md), in order, on an idle machine.
# Writes benchmarks/results/*.json + *.md. About 45 minutes on 2 cores; needs the cached
# Human3.6M test predictions for the offline run (`d3p predict`, docs/lifter.md).
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
$py benchmarks/refine_latency.py                       # T x K x backend x threads x people
$py benchmarks/hardware_limit.py                       # reads refine_latency.json
$py benchmarks/node_latency.py --matrix                # the node over DDS, 50 Hz, T=81, K=2
# offline: every test sequence, non-overlapping windows, two one-thread processes
# (on 2 cores they beat one two-thread process: see docs/performance.md)
$py benchmarks/offline_throughput.py --windows 81 27 --backends onnx torch \
    --overlap-divisor 0 --processes 2 --threads 1
