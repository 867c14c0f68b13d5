"""`d3p export [--model DIR] [--steps K ...] [-o FILE]`: the K-step refinement as ONNX.

Default: the shipped model, its default K, written into the model directory as
`refiner_k{K}.onnx` (where the onnx backend of the node and of `d3p refine` looks first).
Every export is checked against PyTorch on generated windows before it is kept.
"""

import argparse
import sys

PARITY_TOLERANCE_M = 1e-4   # 0.1 mm, the bound


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="DDIM steps K, one file each (default: the model's, 2)")
    parser.add_argument("-o", "--output", default=None,
                        help="output .onnx (one K only; default: MODEL/refiner_k{K}.onnx)")


def parity_error(refiner, onnx_file, steps: int, batch: int = 4, seed: int = 0) -> float:
    """Largest joint coordinate difference (m) between PyTorch and ONNX Runtime on generated
    windows: random 2D keypoints and a lifter-like noisy 3D pose."""
    import numpy as np

    from .runtime import OnnxRefiner

    rng = np.random.default_rng(seed)
    shape = (batch, refiner.window, 17)
    keypoints = rng.uniform(-1, 1, shape + (2,)).astype(np.float32)
    pose = (0.25 * rng.standard_normal(shape + (3,))).astype(np.float32)
    expected = refiner.refine_windows(keypoints, pose, steps=steps)
    actual = OnnxRefiner(onnx_file, num_threads=1).refine_windows(keypoints, pose)
    return float(np.abs(actual - expected).max())


def main(args) -> int:
    from pathlib import Path

    from ..refiner import D3PModelError, D3PRefiner, default_model_dir
    from .onnx import export_onnx, onnx_file_name, source_digest

    model_dir = Path(args.model or default_model_dir())
    try:
        refiner = D3PRefiner.load(model_dir)
    except D3PModelError as err:
        print(f"d3p export: error: {err}", file=sys.stderr)
        return 2
    steps_list = args.steps or [refiner.steps]
    if any(k < 1 for k in steps_list):
        print(f"d3p export: error: --steps must be >= 1, got {steps_list}", file=sys.stderr)
        return 2
    if args.output and len(steps_list) > 1:
        print("d3p export: error: -o takes one file: give one --steps value", file=sys.stderr)
        return 2
    if not refiner.diffusion and steps_list != [1]:
        print(f"d3p export: note: {model_dir} has no diffusion (one step): exporting K=1")
        steps_list = [1]
    source = source_digest(model_dir)
    for steps in steps_list:
        path = Path(args.output) if args.output else model_dir / onnx_file_name(steps)
        export_onnx(refiner, path, steps, source=source)
        error = parity_error(refiner, path, steps)
        if error >= PARITY_TOLERANCE_M:
            path.unlink()
            print(f"d3p export: error: ONNX Runtime differs from PyTorch by {error * 1000:.4f} mm "
                  f"(bound {PARITY_TOLERANCE_M * 1000} mm): {path} removed", file=sys.stderr)
            return 1
        print(f"{path}: K={steps}, window {refiner.window}, {path.stat().st_size / 1024:.0f} KiB, "
              f"max difference to PyTorch {error * 1000:.5f} mm")
    return 0
