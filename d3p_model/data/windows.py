"""Temporal windows: cut sequences into fixed-length windows and put outputs back together.

Windows start every `stride` frames; the last window is aligned to the sequence end so every
frame is covered. Sequences shorter than the window are edge-padded (the first/last frame
repeated), the usual choice for seq2seq pose models. Overlapping outputs are blended with
`blend_weights`, which favour each window's centre.
"""

import numpy as np

from ..skeleton import ROOT
from ..trust import limit_corrections


def window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the windows covering `num_frames` (may be negative never; see pad)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be >= 1")
    if num_frames < 1:
        raise ValueError("a sequence needs at least one frame")
    last = max(num_frames - window, 0)
    starts = np.arange(0, last + 1, stride)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def extract_windows(array: np.ndarray, starts: np.ndarray, window: int) -> np.ndarray:
    """(F, ...) -> (N, window, ...); frames past either end repeat the edge frame."""
    frames = array.shape[0]
    index = np.clip(starts[:, None] + np.arange(window)[None, :], 0, frames - 1)
    return array[index]


def blend_weights(window: int) -> np.ndarray:
    """(window,) weight of each window position when overlapping outputs are blended: a
    triangle, 1 at the centre, 1/window at either end (never 0, so a frame only one window
    covers keeps that window's output).

    Why not a plain mean: a window's end frames have context on one side only, and a plain
    mean jumps wherever a window starts or ends, which shows as jerk. Measured on the
    validation takes by scripts/choose_default.py (docs/results/model_choice_gt2d.md; docs/
    refiner.md, "Blending overlapping windows"): with ground-truth 2D at stride 9 the
    acceleration error is 0.76 mm/frame^2 against 1.15 for the plain mean (the lifter's:
    1.15), MPJPE the same to 0.01 mm."""
    position = np.arange(window, dtype=np.float64) + 0.5
    return 1.0 - np.abs(2.0 * position / window - 1.0)


def stitch_windows(windows: np.ndarray, starts: np.ndarray, num_frames: int,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Blend overlapping (N, window, ...) outputs back into one (F, ...) sequence: each frame
    the mean of the windows that cover it, weighted by each one's position (`weights`,
    (window,) > 0; default `blend_weights`; all ones: the plain mean)."""
    window = windows.shape[1]
    weights = blend_weights(window) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (window,) or not np.all(weights > 0):
        raise ValueError(f"weights must be ({window},) and > 0, got {weights}")
    extra = (1,) * (windows.ndim - 2)
    total = np.zeros((num_frames,) + windows.shape[2:], dtype=np.float64)
    weight = np.zeros(num_frames, dtype=np.float64)
    for start, values in zip(starts, windows):
        stop = min(start + window, num_frames)
        total[start:stop] += weights[: stop - start].reshape((-1,) + extra) * values[: stop - start]
        weight[start:stop] += weights[: stop - start]
    return (total / weight.reshape((-1,) + extra)).astype(windows.dtype)


def check_windows(keypoints_2d: np.ndarray, pose_3d: np.ndarray, window: int, joints: int) -> None:
    """Raise a ValueError naming the problem unless (B, window, joints, 2) + (B, window, joints, 3)
    finite arrays. Shared by every refiner implementation (torch, ONNX Runtime)."""
    expected = (window, joints)
    if keypoints_2d.ndim != 4 or keypoints_2d.shape[1:] != expected + (2,):
        raise ValueError(f"keypoints_2d must be (B, {window}, {joints}, 2), got {keypoints_2d.shape}")
    if pose_3d.shape != keypoints_2d.shape[:-1] + (3,):
        raise ValueError(f"pose_3d must be {keypoints_2d.shape[:-1] + (3,)} to match "
                         f"keypoints_2d, got {pose_3d.shape}")
    if not (np.all(np.isfinite(keypoints_2d)) and np.all(np.isfinite(pose_3d))):
        raise ValueError("keypoints_2d and pose_3d must be finite (no NaN or inf)")


# windows per refine_windows call, unless a backend prefers fewer (ONNX Runtime on the CPU)
BATCH_SIZE = 256


def refine_window_batches(refine_windows, keypoints_2d, pose_3d, starts: np.ndarray,
                          window: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, window, J, 3): `refine_windows` on the windows starting at `starts`, `batch_size`
    windows per call, before any blending."""
    outputs = []
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        outputs.append(refine_windows(extract_windows(keypoints_2d, chunk, window),
                                      extract_windows(pose_3d, chunk, window)))
    return np.concatenate(outputs)


def refine_in_windows(refine_windows, keypoints_2d, pose_3d, window: int, joints: int,
                      stride=None, batch_size: int = BATCH_SIZE,
                      correction_threshold: float = 0.0) -> np.ndarray:
    """Refine a whole (F, J, 2) + (F, J, 3) sequence with `refine_windows(kp, pose) -> refined`
    on batches of windows every `stride` frames (default: the window, no overlap); overlapping
    outputs are blended (`stitch_windows`), then each joint's correction is soft-thresholded by
    `correction_threshold` metres (d3p_model/trust.py; 0: unchanged)."""
    keypoints_2d = np.asarray(keypoints_2d, dtype=np.float32)
    pose_3d = np.asarray(pose_3d, dtype=np.float32)
    if keypoints_2d.ndim != 3 or keypoints_2d.shape[1:] != (joints, 2):
        raise ValueError(f"keypoints_2d must be (F, {joints}, 2), got {keypoints_2d.shape}")
    if pose_3d.shape != keypoints_2d.shape[:1] + (joints, 3):
        raise ValueError(f"pose_3d must be ({keypoints_2d.shape[0]}, {joints}, 3) to "
                         f"match keypoints_2d, got {pose_3d.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stride = window if stride is None else int(stride)
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in 1..{window} (the window), got {stride}")
    frames = pose_3d.shape[0]
    starts = window_starts(frames, window, stride)
    windows = refine_window_batches(refine_windows, keypoints_2d, pose_3d, starts, window,
                                    batch_size)
    refined = stitch_windows(windows, starts, frames)
    return limit_corrections(pose_3d - pose_3d[:, ROOT:ROOT + 1], refined, correction_threshold)
