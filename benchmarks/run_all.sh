#!/usr/bin/env bash
# The published performance numbers (docs/performance.md), in order, on an idle machine.
# Writes benchmarks/results/*.json + *.md. About 30 minutes on 2 cores; needs the cached
# Human3.6M test predictions for the offline and streaming runs (`d3p predict --setting sh2d
# --split test`, docs/lifter.md). The shipped model's T and K (T = 27, K = 2). CUDA rows are
# skipped, with the reason, where there is no GPU. These are the commands behind the
# numbers of docs/performance.md, "Streaming (issue 15)".
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
# one call: T x backend x threads x people (CPU, and CUDA where present)
$py benchmarks/refine_latency.py --windows 27 --steps 2 --devices cpu cuda --seconds-per-cell 3
$py benchmarks/refine_latency.py --causal --windows 27 --steps 2 --seconds-per-cell 3 \
    --name refine_latency_stream
$py benchmarks/refine_latency.py --causal --windows 27 --steps 2 --backends onnx --threads 1 \
    --seconds-per-cell 6 --pause-ms 20 --name refine_latency_stream_paced
$py benchmarks/hardware_limit.py --windows 27 --steps 2      # reads refine_latency{,_stream}.json
# windows per call: the backends' default batch sizes (16 for onnx on the CPU, 256 else)
$py benchmarks/refine_latency.py --windows 27 --steps 2 --threads 1 --batches 1 16 256 \
    --seconds-per-cell 4 --name refine_latency_batches
# the same call as the node's causal mode meets it: one call per frame (20 ms apart), and
# with the second core busy
$py benchmarks/refine_latency.py --windows 27 --steps 2 --backends onnx --threads 1 \
    --seconds-per-cell 6 --pause-ms 20 --name refine_latency_paced
$py benchmarks/refine_latency.py --windows 27 --steps 2 --backends onnx --threads 1 \
    --seconds-per-cell 3 --busy-cpus 1 --name refine_latency_busy
# the node over DDS at 50 Hz: one person causal, ten people lagged (streamed windows)
# causal mode: the node's default there, the causal model streamed; then the windowed
# default in causal mode (the design before), and ten people streamed
$py benchmarks/node_latency.py --people 1 --backends onnx --threads 1 2 --seconds 15
$py benchmarks/node_latency.py --people 1 --backends onnx --threads 1 --seconds 15 \
    --model d3p_model/models/refiner/h36m_sh2d_t27_reproj/model --name node_latency_windowed
$py benchmarks/node_latency.py --people 10 --backends onnx --threads 1 --seconds 15 \
    --name node_latency_causal10
$py benchmarks/node_latency.py --people 10 --mode lagged --backends onnx --threads 1 \
    --seconds 15 --name node_latency_lagged
# offline: every test sequence, the model's stride (model.json, 21: the published accuracy),
# non-overlapping windows (27) and the former stride 9 (T / 3), two one-thread processes
$py benchmarks/offline_throughput.py --windows 27 --backends onnx --overlap-divisor 3 \
    --processes 2 --threads 1
# what streaming costs in accuracy against offline refinement (every 16th test sequence)
# (and the stale-correction design that was measured and not built)
$py benchmarks/streaming_accuracy.py --sequence-stride 16 \
    --modes causal stream lagged:13:9 lagged:26:9 lagged:13:21 stale:1
