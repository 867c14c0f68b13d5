"""`d3p refine IN.npz -o OUT.npz [--model DIR] [--stride S] [--steps K] [--backend onnx]`.

Reads any predictions file, refines every sequence's pose_3d with a trained D3PRefiner
(batched windows over the whole sequence) and writes a predictions file in the same format:
2D keypoints, image sizes, ground truth and confidences are carried over unchanged.
`--backend onnx` runs the exported graph in ONNX Runtime (the same numbers within 0.1 mm).
"""

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="predictions .npz to refine")
    parser.add_argument("-o", "--output", required=True, help="refined predictions .npz")
    parser.add_argument("--model", default=None,
                        help="model directory (default: the shipped model, d3p_model/models/refiner/h36m_sh2d_t27/model)")
    parser.add_argument("--stride", type=int, default=None,
                        help="frames between windows (default: the window, non-overlapping; "
                             "smaller: overlapping windows, averaged)")
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps (default: the model's, 2)")
    parser.add_argument("--batch-size", type=int, default=256, help="windows per batch")
    parser.add_argument("--device", default="cpu", help="device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch: PyTorch; onnx: ONNX Runtime (MODEL/refiner_k{K}.onnx, "
                             "exported into the cache if missing)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: the library's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .data.predictions import (Predictions, PredictionsFormatError, Sequence,
                                   load_predictions, save_predictions)
    from .refiner import D3PModelError, D3PRefiner, default_model_dir

    model_dir = args.model or default_model_dir()
    if args.steps is not None and args.steps < 1:
        print(f"d3p refine: error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    if args.threads < 0:
        print(f"d3p refine: error: --threads must be >= 0, got {args.threads}", file=sys.stderr)
        return 2
    try:
        if args.backend == "onnx":
            from .export.runtime import OnnxRefiner
            refiner = OnnxRefiner.load(model_dir, steps=args.steps, device=args.device,
                                       num_threads=args.threads,
                                       warn=lambda m: print(f"d3p refine: {m}", file=sys.stderr))
            refine_sequence = refiner.refine_sequence
            steps = refiner.steps
        else:
            import torch
            if args.threads:
                torch.set_num_threads(args.threads)
            refiner = D3PRefiner.load(model_dir, device=args.device)
            steps = refiner.steps if args.steps is None or not refiner.diffusion else args.steps
            refine_sequence = lambda kp, pose, stride, batch_size: refiner.refine_sequence(  # noqa
                kp, pose, stride=stride, batch_size=batch_size, steps=steps)
        predictions = load_predictions(args.input)
    except (D3PModelError, PredictionsFormatError, ValueError) as err:  # ValueError: bad --device
        print(f"d3p refine: error: {err}", file=sys.stderr)
        return 2
    if args.stride is not None and not 1 <= args.stride <= refiner.window:
        print(f"d3p refine: error: --stride must be in 1..{refiner.window} (the model's "
              f"window), got {args.stride}", file=sys.stderr)
        return 2
    refined = {}
    for key, seq in tqdm(predictions.items(), total=len(predictions), desc="refine",
                         disable=args.no_progress, dynamic_ncols=True):
        # the refiner works root-relative; files carry root-relative poses already
        pose = seq.pose_3d - seq.pose_3d[:, :1]
        out = refine_sequence(seq.keypoints_normalised(), pose, args.stride, args.batch_size)
        refined[key] = Sequence(keypoints_2d=seq.keypoints_2d, image_size=seq.image_size,
                                pose_3d=out.astype(np.float32),
                                ground_truth_3d=seq.ground_truth_3d,
                                confidence_2d=seq.confidence_2d)
    meta = dict(predictions.meta)
    meta["refined_by"] = {
        "refiner": "D3PRefiner", "model": str(model_dir),
        "model_name": refiner.info.get("name"), "window": refiner.window,
        "stride": args.stride or refiner.window,
        "steps": steps, "backend": args.backend,
        "input_estimator": predictions.meta.get("estimator"),
    }
    meta["estimator"] = f"{predictions.meta.get('estimator', 'unknown')}+d3prefiner"
    save_predictions(args.output, Predictions(refined, meta))
    print(f"refined {len(refined)} sequences -> {args.output}")
    return 0
