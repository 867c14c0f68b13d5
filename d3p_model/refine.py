"""`d3p refine IN.npz -o OUT.npz [--model DIR] [--stride S] [--steps K] [--correction-threshold MM]
[--backend onnx] [--jobs N]`.

Reads any predictions file, refines every sequence's pose_3d with a trained D3PRefiner
(batched windows over the whole sequence) and writes a predictions file in the same format:
2D keypoints, image sizes, ground truth and confidences are carried over unchanged.
`--backend onnx` runs the exported graph in ONNX Runtime (the same numbers within 0.1 mm).
`--jobs N` refines N sequences at once in N processes: this model's kernels are small, so on
a few CPU cores N one-thread processes beat one N-thread process (docs/performance.md).
"""

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="predictions .npz to refine")
    parser.add_argument("-o", "--output", required=True, help="refined predictions .npz")
    parser.add_argument("--model", default=None,
                        help="model directory (default: the shipped model, d3p_model/refiner.py DEFAULT_MODEL)")
    parser.add_argument("--stride", type=int, default=None,
                        help="frames between windows (default: the model's stride, from its "
                             "model.json; smaller than the window: overlapping windows, blended)")
    parser.add_argument("--steps", type=int, default=None,
                        help="DDIM steps (default: the model's, 2)")
    parser.add_argument("--correction-threshold", type=float, default=None, metavar="MM",
                        help="soft threshold on each joint's correction, mm (default: the "
                             "model's, from its model.json; 0: off)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="windows per batch (default: the backend's; 16 for onnx on the "
                             "CPU, 256 otherwise)")
    parser.add_argument("--device", default="cpu", help="device (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                        help="torch: PyTorch; onnx: ONNX Runtime (MODEL/refiner_k{K}.onnx, "
                             "exported into the cache if missing)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per process (0: the library's default; 1 with --jobs > 1)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes refining sequences in parallel (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class SequenceRefiner:
    """One loaded model behind `refine(keypoints_normalised, pose) -> refined` for a sequence."""

    def __init__(self, backend: str, model_dir, steps, device: str, threads: int, stride,
                 batch_size: int, correction_threshold_mm=None, warn=None):
        warn = warn or (lambda m: print(f"d3p refine: {m}", file=sys.stderr))
        if backend == "onnx":
            from .export.runtime import OnnxRefiner
            self.model = OnnxRefiner.load(model_dir, steps=steps, device=device,
                                          num_threads=threads, warn=warn)
            self.steps = self.model.steps
            self._refine = lambda kp, pose, stride, batch_size: self.model.refine_sequence(  # noqa
                kp, pose, stride=stride, batch_size=batch_size,
                correction_threshold=self.correction_threshold)
        else:
            import torch

            from .refiner import D3PRefiner
            if threads:
                torch.set_num_threads(threads)
            self.model = D3PRefiner.load(model_dir, device=device)
            self.steps = (self.model.steps if steps is None or not self.model.diffusion
                          else int(steps))
            self._refine = lambda kp, pose, stride, batch_size: self.model.refine_sequence(  # noqa
                kp, pose, stride=stride, batch_size=batch_size, steps=self.steps,
                correction_threshold=self.correction_threshold)
        self.window = self.model.window
        self.info = self.model.info
        self.stride = self.model.stride if stride is None else stride
        # metres: the model's (model.json) unless given
        self.correction_threshold = (self.model.correction_threshold
                                     if correction_threshold_mm is None
                                     else correction_threshold_mm / 1000.0)
        self.batch_size = batch_size

    def refine(self, keypoints_normalised, pose):
        return self._refine(keypoints_normalised, pose, self.stride, self.batch_size)


_worker = None   # the SequenceRefiner of a --jobs worker process


def _start_worker(options: dict) -> None:
    global _worker
    _worker = SequenceRefiner(**options)


def _refine_in_worker(item):
    key, keypoints_normalised, pose = item
    return key, _worker.refine(keypoints_normalised, pose)


def main(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from .data.predictions import (Predictions, PredictionsFormatError, Sequence,
                                   load_predictions, save_predictions)
    from .model_files import D3PModelError, default_model_dir

    model_dir = args.model or default_model_dir()
    for name, value, least in (("--steps", args.steps, 1), ("--threads", args.threads, 0),
                               ("--correction-threshold", args.correction_threshold, 0),
                               ("--jobs", args.jobs, 1), ("--batch-size", args.batch_size, 1)):
        if value is not None and not value >= least:   # (NaN fails too)
            print(f"d3p refine: error: {name} must be >= {least}, got {value}", file=sys.stderr)
            return 2
    threads = args.threads or (1 if args.jobs > 1 else 0)
    options = dict(backend=args.backend, model_dir=str(model_dir), steps=args.steps,
                   device=args.device, threads=threads, stride=args.stride,
                   batch_size=args.batch_size, correction_threshold_mm=args.correction_threshold)
    try:
        # loaded here in any case: bad models, devices and strides fail before any work
        refiner = SequenceRefiner(**options)
        predictions = load_predictions(args.input)
    except (D3PModelError, PredictionsFormatError, ValueError) as err:  # ValueError: bad --device
        print(f"d3p refine: error: {err}", file=sys.stderr)
        return 2
    if args.stride is not None and not 1 <= args.stride <= refiner.window:
        print(f"d3p refine: error: --stride must be in 1..{refiner.window} (the model's "
              f"window), got {args.stride}", file=sys.stderr)
        return 2
    # the refiner works root-relative; files carry root-relative poses already
    work = ((key, seq.keypoints_normalised(), seq.pose_3d - seq.pose_3d[:, :1])
            for key, seq in predictions.items())
    progress = dict(total=len(predictions), desc="refine", disable=args.no_progress,
                    dynamic_ncols=True)
    outputs = {}
    if args.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: forked torch/onnxruntime thread pools are not safe to reuse
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_start_worker, initargs=(options,)) as pool:
            for key, out in tqdm(pool.map(_refine_in_worker, work), **progress):
                outputs[key] = out
    else:
        for key, keypoints, pose in tqdm(work, **progress):
            outputs[key] = refiner.refine(keypoints, pose)
    refined = {key: Sequence(keypoints_2d=seq.keypoints_2d, image_size=seq.image_size,
                             pose_3d=outputs[key].astype(np.float32),
                             ground_truth_3d=seq.ground_truth_3d, confidence_2d=seq.confidence_2d)
               for key, seq in predictions.items()}
    meta = dict(predictions.meta)
    meta["refined_by"] = {
        "refiner": "D3PRefiner", "model": str(model_dir),
        "model_name": refiner.info.get("name"), "window": refiner.window,
        "stride": args.stride or refiner.stride,
        "steps": refiner.steps, "backend": args.backend,
        "correction_threshold_mm": round(1000.0 * refiner.correction_threshold, 6),
        "input_estimator": predictions.meta.get("estimator"),
    }
    meta["estimator"] = f"{predictions.meta.get('estimator', 'unknown')}+d3prefiner"
    save_predictions(args.output, Predictions(refined, meta))
    print(f"refined {len(refined)} sequences -> {args.output}")
    return 0
