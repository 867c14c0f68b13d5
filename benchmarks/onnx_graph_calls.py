#!/usr/bin/env python3
"""Run one exported refiner graph N times on generated windows: the command that
`farm-bench` times to compare two graphs of the same model (A/B, whole process).

    git show d981ef1:d3p_model/models/refiner/h36m_sh2d_t27_reproj/model/refiner_k2.onnx > /tmp/old.onnx
    farm-bench -n 8 --timeout 300 \\
        --vs ".venv/bin/python benchmarks/onnx_graph_calls.py /tmp/old.onnx --batch 1 --calls 1000" \\
        -- .venv/bin/python benchmarks/onnx_graph_calls.py \\
           d3p_model/models/refiner/h36m_sh2d_t27_reproj/model/refiner_k2.onnx --batch 1 --calls 1000

One ONNX Runtime thread, as the node runs it. Prints the median call time (for a quick look;
the A/B figure is farm-bench's paired wall-time ratio). Input: generated windows, never data.
"""

from __future__ import annotations

import argparse
import sys
import time

import common


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx_file")
    parser.add_argument("--batch", type=int, default=1, help="windows per call")
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.calls < 1:
        parser.error("--batch and --calls must be >= 1")
    import numpy as np
    import onnxruntime as ort

    from d3p_model.export.onnx import INPUTS
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(args.onnx_file, options, providers=["CPUExecutionProvider"])
    window = session.get_inputs()[0].shape[1]
    keypoints, poses = common.sample_windows(int(window), args.batch)
    feed = {INPUTS[0]: keypoints, INPUTS[1]: poses}
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    print(f"{args.onnx_file}: {args.calls} calls of {args.batch} window(s), median "
          f"{1000 * float(np.median(times)):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
