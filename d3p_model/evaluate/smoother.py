"""The classical reference refiner: per-joint temporal Savitzky-Golay smoothing of `pose_3d`.

`d3p smooth tune TRAIN.npz [...] -o params.json` grid-searches the window length and
polynomial order that minimise MPJPE (mean over actions) on TRAINING-subject files only;
`d3p smooth apply IN.npz -o OUT.npz --params params.json` (or `--window W --order P`) writes
the smoothed predictions in the same format, with what was done recorded in the meta.

Edges use scipy's mode="interp" (a polynomial fitted to the first/last window), which
neither pads with invented frames nor pulls the ends towards zero. A sequence shorter than
the window is smoothed with the longest odd window it holds; one too short for the
polynomial is left as it is.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
from scipy.signal import savgol_filter
from tqdm import tqdm

from ..data.predictions import (Predictions, PredictionsFormatError, action_of, load_predictions,
                                save_predictions)
from .metrics import mpjpe_per_frame
from .report import EvaluationError, subject_of

METHOD = "savitzky-golay"
MODE = "interp"
DEFAULT_WINDOWS = (3, 5, 7, 9, 11, 13, 15, 19, 23, 27, 33, 41, 51, 61, 81)
DEFAULT_ORDERS = (1, 2, 3, 4)
# Human3.6M's test subjects: tuning on them would leak the test set into the reference.
TEST_SUBJECTS = ("S9", "S11")


def check_parameters(window: int, order: int) -> None:
    if int(window) != window or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window}")
    if int(order) != order or order < 0 or order >= window:
        raise ValueError(f"order must be an integer in [0, window), got {order} (window {window})")


def smooth_sequence(poses: np.ndarray, window: int, order: int) -> np.ndarray:
    """Savitzky-Golay smoothing along axis 0 of (F, ...) poses; same shape and dtype."""
    check_parameters(window, order)
    poses = np.asarray(poses)
    frames = poses.shape[0]
    window = min(window, frames if frames % 2 else frames - 1)
    if window <= order:  # too short for this polynomial: nothing sensible to fit
        return poses.copy()
    smoothed = savgol_filter(poses.astype(np.float64), window, order, axis=0, mode=MODE)
    return smoothed.astype(poses.dtype)


def smooth_predictions(predictions: Predictions, window: int, order: int,
                       source: str | None = None) -> Predictions:
    """A copy of `predictions` with every sequence's pose_3d smoothed; the meta records it."""
    check_parameters(window, order)
    sequences = {}
    for key, seq in predictions.items():
        smoothed = copy.copy(seq)
        smoothed.pose_3d = smooth_sequence(seq.pose_3d, window, order)
        sequences[key] = smoothed
    meta = dict(predictions.meta)
    step = {"method": METHOD, "window": int(window), "order": int(order), "mode": MODE}
    if source is not None:
        step["input"] = str(source)
    meta["refinements"] = list(meta.get("refinements", [])) + [step]
    meta["estimator"] = f"{meta.get('estimator', 'unknown')} + {METHOD}"
    return Predictions(sequences, meta)


def _tuning_data(predictions_list: list[Predictions],
                 sequence_stride: int = 1) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(action, root-relative pose, root-relative ground truth) per sequence, float64, once;
    every `sequence_stride`-th sequence of each file in sorted key order."""
    data = []
    for predictions in predictions_list:
        for key in sorted(predictions.sequences)[::sequence_stride]:
            seq = predictions.sequences[key]
            if seq.ground_truth_3d is None:
                raise EvaluationError(f"sequence '{key}' has no ground_truth_3d: cannot tune")
            pose = seq.pose_3d.astype(np.float64)
            truth = seq.ground_truth_3d.astype(np.float64)
            data.append((action_of(key), pose - pose[:, :1], truth - truth[:, :1]))
    return data


def _score(data, window: int | None = None, order: int | None = None) -> float:
    """MPJPE in mm, mean over actions (frames pooled within an action), of the poses as they
    are (window None) or smoothed. Only MPJPE: the grid must not pay for Procrustes."""
    sums: dict[str, list[float]] = {}
    for action, pose, truth in data:
        if window is not None:
            pose = smooth_sequence(pose, window, order)  # linear: root-relative stays so
        per_frame = mpjpe_per_frame(pose, truth) * 1000.0
        total = sums.setdefault(action, [0.0, 0])
        total[0] += float(per_frame.sum())
        total[1] += per_frame.size
    return float(np.mean([total / count for total, count in sums.values()]))


def tune(predictions_list: list[Predictions], windows=DEFAULT_WINDOWS, orders=DEFAULT_ORDERS,
         allow_test_subjects: bool = False, progress: bool = True,
         sequence_stride: int = 1) -> dict:
    """Grid search of (window, order) minimising MPJPE (mean over actions) on the given
    training predictions (every `sequence_stride`-th sequence, to save time on big files).
    Returns {"window", "order", "mpjpe_mm", "mpjpe_before_mm", "grid", ...}."""
    if sequence_stride < 1:
        raise ValueError(f"sequence_stride must be >= 1, got {sequence_stride}")
    if not predictions_list or not any(len(p) for p in predictions_list):
        raise EvaluationError("no sequences to tune on")
    if not allow_test_subjects:
        leaked = sorted({subject_of(key) for p in predictions_list for key in p.sequences}
                        & set(TEST_SUBJECTS))
        if leaked:
            raise EvaluationError(
                f"test subjects {leaked} in the tuning data: tune on training subjects only "
                f"(or pass allow_test_subjects / --allow-test-subjects for generated data)")
    grid_points = [(w, o) for w in sorted(set(windows)) for o in sorted(set(orders)) if o < w]
    if not grid_points:
        raise ValueError(f"empty grid: windows {windows}, orders {orders}")
    for window, order in grid_points:
        check_parameters(window, order)
    data = _tuning_data(predictions_list, sequence_stride)
    before = _score(data)
    grid = []
    for window, order in tqdm(grid_points, desc="savgol grid", disable=not progress):
        grid.append({"window": window, "order": order, "mpjpe_mm": _score(data, window, order)})
    best = min(grid, key=lambda entry: (entry["mpjpe_mm"], entry["window"], entry["order"]))
    return {"method": METHOD, "mode": MODE, "window": best["window"], "order": best["order"],
            "mpjpe_mm": best["mpjpe_mm"], "mpjpe_before_mm": before, "grid": grid,
            "sequence_stride": sequence_stride, "num_sequences": len(data),
            "num_frames": int(sum(len(pose) for _, pose, _ in data))}


def load_parameters(path) -> tuple[int, int]:
    try:
        params = json.loads(Path(path).read_text())
        window, order = int(params["window"]), int(params["order"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a smoother parameter file with 'window' and 'order' "
                         f"({err!r})") from err
    check_parameters(window, order)
    return window, order


def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest="action", required=True, metavar="{tune,apply}")
    tune_parser = commands.add_parser(
        "tune", help="grid-search window and order on training-subject prediction files")
    tune_parser.add_argument("files", nargs="+", metavar="TRAIN.npz")
    tune_parser.add_argument("-o", "--output", required=True, metavar="params.json")
    tune_parser.add_argument("--windows", nargs="+", type=int, default=list(DEFAULT_WINDOWS))
    tune_parser.add_argument("--orders", nargs="+", type=int, default=list(DEFAULT_ORDERS))
    tune_parser.add_argument("--sequence-stride", type=int, default=1, metavar="K",
                             help="tune on every K-th sequence only (e.g. 4: about one camera "
                                  "of Human3.6M's four), to save time")
    tune_parser.add_argument("--allow-test-subjects", action="store_true",
                             help=f"do not refuse files containing {' '.join(TEST_SUBJECTS)}")
    apply_parser = commands.add_parser("apply", help="smooth a predictions file")
    apply_parser.add_argument("input", metavar="IN.npz")
    apply_parser.add_argument("-o", "--output", required=True, metavar="OUT.npz")
    apply_parser.add_argument("--params", metavar="params.json", help="from `d3p smooth tune`")
    apply_parser.add_argument("--window", type=int)
    apply_parser.add_argument("--order", type=int)


def main(args) -> int:
    try:
        if args.action == "tune":
            return _main_tune(args)
        return _main_apply(args)
    except (PredictionsFormatError, EvaluationError, ValueError) as err:
        print(f"d3p smooth {args.action}: {err}", file=sys.stderr)
        return 1


def _main_tune(args) -> int:
    predictions = [load_predictions(name) for name in args.files]
    result = tune(predictions, args.windows, args.orders, args.allow_test_subjects,
                  sequence_stride=args.sequence_stride)
    result["tuned_on"] = [str(name) for name in args.files]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"window {result['window']}, order {result['order']}: MPJPE "
          f"{result['mpjpe_before_mm']:.2f} -> {result['mpjpe_mm']:.2f} mm on the tuning files; "
          f"wrote {args.output}")
    return 0


def _main_apply(args) -> int:
    if args.params is not None:
        if args.window is not None or args.order is not None:
            raise ValueError("give either --params or --window/--order, not both")
        window, order = load_parameters(args.params)
    elif args.window is not None and args.order is not None:
        window, order = args.window, args.order
    else:
        raise ValueError("give --params params.json, or both --window and --order")
    check_parameters(window, order)
    predictions = load_predictions(args.input)
    smoothed = smooth_predictions(predictions, window, order, source=args.input)
    if args.params is not None:
        smoothed.meta["refinements"][-1]["params"] = str(args.params)
    save_predictions(args.output, smoothed)
    print(f"smoothed {len(smoothed)} sequences (window {window}, order {order}) -> {args.output}")
    return 0
