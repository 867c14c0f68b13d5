"""How far the refiner may move its input: a soft threshold on each joint's correction.

The denoiser proposes a correction for every joint of every frame. On a correct skeleton the
ideal correction is zero, but a network's output is never exactly zero: the shipped models
moved the clean ground truth by 4-8 mm, more than a 30 mm error on three joints costs
(docs/results/do_no_harm_*.md). Soft thresholding (the classic shrinkage of wavelet
denoising) drops each joint's correction shorter than the threshold and shortens a longer
one by it, so corrections of the size the network makes on good input vanish while a large
correction of a joint the input got wrong mostly survives. The threshold is an inference
setting of the model (model.json `correction_threshold_mm`, like `stride`), chosen on
validation by scripts/choose_default.py; it acts on the final output of each frame (after
overlapping windows are blended), in `d3p refine` and in the node alike.

numpy only: the ONNX Runtime path and the ROS node use it without torch.
"""

from __future__ import annotations

import numpy as np

SPEC_KEY = "correction_threshold_mm"


def threshold_from_spec(spec: dict) -> float:
    """The model's threshold in metres (0 when model.json has none: older models)."""
    value = float(spec.get(SPEC_KEY, 0.0) or 0.0)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{SPEC_KEY} must be a finite number >= 0, got {value}")
    return value / 1000.0


def limit_corrections(pose_3d: np.ndarray, refined: np.ndarray, threshold: float) -> np.ndarray:
    """Soft-threshold the per-joint correction `refined - pose_3d` (both (..., J, 3), same
    root-relative frame) by `threshold` metres; returns the limited refined pose."""
    refined = np.asarray(refined)
    if threshold <= 0:
        return refined
    pose_3d = np.asarray(pose_3d, dtype=np.float64)
    correction = refined.astype(np.float64) - pose_3d
    length = np.linalg.norm(correction, axis=-1, keepdims=True)
    keep = np.clip(1.0 - threshold / np.maximum(length, 1e-12), 0.0, None)
    return (pose_3d + keep * correction).astype(refined.dtype)
