"""Temporal windows: cut sequences into fixed-length windows and put outputs back together.

Windows start every `stride` frames; the last window is aligned to the sequence end so every
frame is covered. Sequences shorter than the window are edge-padded (the first/last frame
repeated), the usual choice for seq2seq pose models.
"""

import numpy as np


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


def stitch_windows(windows: np.ndarray, starts: np.ndarray, num_frames: int) -> np.ndarray:
    """Average overlapping window outputs back into one (F, ...) sequence."""
    window = windows.shape[1]
    total = np.zeros((num_frames,) + windows.shape[2:], dtype=np.float64)
    count = np.zeros(num_frames, dtype=np.float64)
    for start, values in zip(starts, windows):
        stop = min(start + window, num_frames)
        total[start:stop] += values[: stop - start]
        count[start:stop] += 1
    return (total / count.reshape((-1,) + (1,) * (windows.ndim - 2))).astype(windows.dtype)
