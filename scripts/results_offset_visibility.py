#!/usr/bin/env python3
"""What the 2D keypoints show of the do-no-harm offset case: a bound on passing it.

    .venv/bin/python scripts/results_offset_visibility.py [--cache cache] [--window 27]

The refiner can only correct a joint that it can tell is wrong. Of the cues it has, the one
that points at a single joint is its 2D-consistency residual (`reprojection_residual`: where
the joint's keypoint says it is, minus where the pose puts it, under the frame's best
weak-perspective camera). For the do-no-harm offset case (the ground truth of every 4th
S9/S11 sequence, a constant 30 mm on the right foot and both wrists, exactly as
scripts/results_do_no_harm.py builds it), per offset joint and 2D setting:
  - signal: what the offset changes in that residual, averaged over each window of
    --window frames (a constant offset is constant there; the refiner sees a window);
  - floor: the residual of the *correct* skeleton at the same joint, averaged the same way:
    what a correct joint already shows (with ground-truth 2D the weak-perspective
    approximation only; with detections also the detector's error that stays over a
    window);
  - the share of windows where the signal is larger than the floor.
Writes docs/results/offset_visibility.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from d3p_model.data.predictions import load_predictions  # noqa: E402
from d3p_model.denoiser.model import reprojection_residual  # noqa: E402
from d3p_model.evaluate.do_no_harm import OFFSET_JOINTS, _seed, corrupt  # noqa: E402
from d3p_model.skeleton import H36M17_JOINTS as JOINT_NAMES, ROOT  # noqa: E402
from d3p_model.train.config import cache_dir  # noqa: E402

SETTINGS = {"gt2d": "ground-truth 2D", "sh2d": "detected 2D (Stacked Hourglass)"}


def residual_mm(pose: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return 1000 * reprojection_residual(torch.from_numpy(pose.astype(np.float64)),
                                            torch.from_numpy(keypoints.astype(np.float64))
                                            ).numpy()


def window_means(values: np.ndarray, window: int) -> np.ndarray:
    """(F, ...) -> (F // window, ...) means over consecutive non-overlapping windows."""
    count = values.shape[0] // window
    return values[:count * window].reshape(count, window, *values.shape[1:]).mean(axis=1)


def measure(path: Path, keys: list[str], window: int) -> dict:
    predictions = load_predictions(path)
    signal, floor = [], []
    for key in keys:
        seq = predictions.sequences[key]
        truth = np.asarray(seq.ground_truth_3d, np.float64)
        truth = truth - truth[:, ROOT:ROOT + 1]
        shifted = corrupt(truth, "offset_30mm", _seed(key, "offset_30mm", 0))
        keypoints = np.asarray(seq.keypoints_normalised(), np.float64)
        correct = residual_mm(truth, keypoints)
        offset = residual_mm(shifted, keypoints)
        signal.append(np.linalg.norm(window_means(offset - correct, window), axis=-1))
        floor.append(window_means(correct, window))
    signal, floor = np.concatenate(signal), np.concatenate(floor)   # (windows, 17), (.., 2)
    # the part of the floor a refiner could learn away: the joint's average residual vector
    # (a detector's systematic bias, a keypoint defined elsewhere than the joint)
    unexplained = np.linalg.norm(floor - floor.mean(axis=0), axis=-1)
    floor = np.linalg.norm(floor, axis=-1)
    joints = {}
    for j in OFFSET_JOINTS:
        joints[JOINT_NAMES[j]] = {"signal_mm": float(signal[:, j].mean()),
                                  "floor_mm": float(floor[:, j].mean()),
                                  "visible_share": float(np.mean(signal[:, j] > floor[:, j])),
                                  "floor_unbiased_mm": float(unexplained[:, j].mean()),
                                  "visible_share_unbiased":
                                      float(np.mean(signal[:, j] > unexplained[:, j]))}
    return {"windows": int(signal.shape[0]), "joints": joints,
            "floor_per_joint_mm": floor.mean(axis=0).tolist(),
            "floor_unbiased_per_joint_mm": unexplained.mean(axis=0).tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=cache_dir())
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--window", type=int, default=27)
    parser.add_argument("--sequence-stride", type=int, default=4)
    args = parser.parse_args(argv)
    paths = {s: args.cache / "predictions" / s / "test.npz" for s in SETTINGS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `d3p predict` for both settings")
    # the do-no-harm script's sequences: sorted keys, every K-th
    keys = sorted(k for k, s in load_predictions(paths["sh2d"]).items()
                  if s.ground_truth_3d is not None)[::args.sequence_stride]
    document = {"window": args.window, "sequence_stride": args.sequence_stride,
                "sequences": len(keys), "settings": {}}
    for setting, path in paths.items():
        document["settings"][setting] = measure(path, keys, args.window)
    lines = ["# What the 2D keypoints show of a 30 mm offset", "",
             f"Generated by `scripts/results_offset_visibility.py --window {args.window}`. "
             f"The do-no-harm offset case ({len(keys)} S9/S11 sequences, every "
             f"{args.sequence_stride}th sorted, the same offsets as "
             "`scripts/results_do_no_harm.py`). Per offset joint, averaged over windows of "
             f"{args.window} frames: the change the offset makes to the joint's "
             "2D-consistency residual (signal), the residual a *correct* skeleton already has "
             "at that joint (floor), and the share of windows where the signal is larger; "
             "then the same without the joint's average residual over all windows (a bias a "
             "refiner could learn: a detector's systematic error, a keypoint defined elsewhere "
             "than the joint). Residuals in mm of the pose's own units (weak-perspective "
             "camera per frame).", "",
             "| 2D | joint | signal (mm) | floor (mm) | windows with signal > floor | "
             "floor without its bias (mm) | windows with signal > that |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for setting, result in document["settings"].items():
        for joint, row in result["joints"].items():
            lines.append(f"| {SETTINGS[setting]} | {joint} | {row['signal_mm']:.1f} | "
                         f"{row['floor_mm']:.1f} | {100 * row['visible_share']:.0f}% | "
                         f"{row['floor_unbiased_mm']:.1f} | "
                         f"{100 * row['visible_share_unbiased']:.0f}% |")
    lines += ["", "The floor at every joint (a correct skeleton's window-mean residual / the "
              "same without its bias, mm):",
              "", "| 2D | " + " | ".join(JOINT_NAMES) + " |",
              "| --- | " + " | ".join("---:" for _ in JOINT_NAMES) + " |"]
    for setting, result in document["settings"].items():
        lines.append(f"| {setting} | " + " | ".join(
            f"{a:.0f} / {b:.0f}" for a, b in zip(result["floor_per_joint_mm"],
                                                 result["floor_unbiased_per_joint_mm"])) + " |")
    lines.append("")
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "offset_visibility.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.docs / "offset_visibility.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
