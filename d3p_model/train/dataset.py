"""Training windows from predictions with ground truth, gathered on the fly.

All frames of all sequences sit in three flat tensors; a window is (start, first, last)
frame indices, and a batch is gathered by index (edge frames repeated at sequence ends).
This keeps memory at one copy of the frames however many overlapping windows there are.
"""

from __future__ import annotations


import numpy as np
import torch

from ..data.predictions import Predictions, load_predictions
from ..data.windows import window_starts
from ..skeleton import ROOT
from .config import ConfigError, resolve_data_path

TEST_SUBJECTS = ("S9", "S11")


def load_training_predictions(data_config: dict) -> Predictions:
    source = data_config["train"]
    if isinstance(source, dict):
        if set(source) != {"synthetic"}:
            raise ConfigError("data.train as a mapping must be {synthetic: {...}}")
        from ..data.synthetic import make_synthetic_predictions
        return make_synthetic_predictions(**source["synthetic"])
    path = resolve_data_path(source)
    if not data_config["allow_test_subjects"] and path.name == "test.npz":
        raise ConfigError(f"{path}: refusing to train on a test file (evaluation only)")
    if not path.is_file():
        raise ConfigError(f"data.train: {path} does not exist (run the lifter's `d3p predict` "
                          f"first, or set D3P_CACHE)")
    predictions = load_predictions(path)
    if not data_config["allow_test_subjects"]:
        bad = [k for k in predictions.sequences if k.split("/")[0] in TEST_SUBJECTS]
        if bad:
            raise ConfigError(f"{path}: contains test-subject sequences (e.g. {bad[0]!r}); "
                              f"training must not see {TEST_SUBJECTS}")
    missing = [k for k, s in predictions.items() if s.ground_truth_3d is None]
    if missing:
        raise ConfigError(f"{path}: sequence {missing[0]!r} has no ground_truth_3d; training "
                          f"needs it")
    return predictions


def sequence_group(key: str) -> str:
    """Views of one take belong together: 'S1/Walking 1/54138969' -> 'S1/Walking 1'."""
    parts = key.split("/")
    return "/".join(parts[:2]) if len(parts) >= 3 else key


def split_validation(keys, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Hold out a seeded random `fraction` of sequence groups (all views of a take)."""
    keys = sorted(keys)
    groups = sorted({sequence_group(k) for k in keys})
    if fraction <= 0:
        return keys, []
    if len(groups) < 2:
        raise ConfigError(f"a validation split needs at least 2 sequence groups, got {groups}")
    count = min(max(1, int(round(fraction * len(groups)))), len(groups) - 1)
    rng = np.random.default_rng(seed)
    held = set(rng.choice(groups, size=count, replace=False).tolist())
    train = [k for k in keys if sequence_group(k) not in held]
    val = [k for k in keys if sequence_group(k) in held]
    return train, val


def split_validation_subjects(keys, subjects) -> tuple[list[str], list[str]]:
    """Hold out every take of the given subjects ('S8/Walking 1/...' is S8's)."""
    keys = sorted(keys)
    present = {k.split("/")[0] for k in keys}
    missing = sorted(set(subjects) - present)
    if missing:
        raise ConfigError(f"data.validation_subjects {missing}: not in the training file "
                          f"(it has {sorted(present)})")
    train = [k for k in keys if k.split("/")[0] not in subjects]
    if not train:
        raise ConfigError("data.validation_subjects holds out every subject: nothing to train on")
    return train, [k for k in keys if k.split("/")[0] in subjects]


class WindowSet:
    """Windows of `window` frames every `stride` frames over the given sequences."""

    def __init__(self, predictions: Predictions, keys, window: int, stride: int,
                 frame_subsample: int = 1):
        if not keys:
            raise ConfigError("no sequences to build windows from")
        keypoints, poses, truths, starts, firsts, lasts = [], [], [], [], [], []
        self.sequences = {}   # key -> (first frame index, frame count) in the flat tensors
        offset = 0
        for key in keys:
            seq = predictions.sequences[key]
            step = slice(None, None, frame_subsample)
            pose = seq.pose_3d[step]
            truth = seq.ground_truth_3d[step]
            keypoints.append(seq.keypoints_normalised()[step])
            poses.append(pose - pose[:, ROOT:ROOT + 1])
            truths.append(truth - truth[:, ROOT:ROOT + 1])
            frames = pose.shape[0]
            seq_starts = window_starts(frames, window, stride) + offset
            starts.append(seq_starts)
            firsts.append(np.full(len(seq_starts), offset))
            lasts.append(np.full(len(seq_starts), offset + frames - 1))
            self.sequences[key] = (offset, frames)
            offset += frames
        self.window = window
        self.keypoints_2d = torch.from_numpy(np.concatenate(keypoints).astype(np.float32))
        self.pose_3d = torch.from_numpy(np.concatenate(poses).astype(np.float32))
        self.ground_truth_3d = torch.from_numpy(np.concatenate(truths).astype(np.float32))
        self.starts = torch.from_numpy(np.concatenate(starts))
        self.firsts = torch.from_numpy(np.concatenate(firsts))
        self.lasts = torch.from_numpy(np.concatenate(lasts))

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.pose_3d.shape[0])

    def gather(self, indices: torch.Tensor, device="cpu"):
        """Window indices (B,) -> keypoints (B, T, 17, 2), estimate and truth (B, T, 17, 3)."""
        frames = self.starts[indices, None] + torch.arange(self.window)[None, :]
        frames = torch.maximum(torch.minimum(frames, self.lasts[indices, None]),
                               self.firsts[indices, None])
        return tuple(a[frames].to(device) for a in
                     (self.keypoints_2d, self.pose_3d, self.ground_truth_3d))

    def frames_of(self, key: str):
        """The (keypoints, estimate, truth) numpy arrays of one sequence."""
        first, count = self.sequences[key]
        return tuple(a[first:first + count].numpy() for a in
                     (self.keypoints_2d, self.pose_3d, self.ground_truth_3d))
