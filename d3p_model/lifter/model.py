"""The base lifter: a residual MLP over a short window of 2D frames -> the centre frame in 3D.

Martinez et al. (2017)'s "simple yet effective baseline" (linear-BN-ReLU-dropout residual
blocks) with its single-frame input widened to 2r + 1 frames spaced `dilation` apart. The
few neighbouring frames average out detector jitter and disambiguate some depth; the model
stays an MLP, so it trains to published accuracy on one CPU thread in under 20 minutes
(docs/lifter.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..skeleton import H36M17_LEFT, H36M17_RIGHT, NUM_JOINTS, ROOT

# The network's output is in units of 0.2 m: root-relative joints then sit near unit scale.
OUTPUT_SCALE = 0.2


def mirror_permutation() -> np.ndarray:
    """Joint order after a left/right mirror: left and right joints swap."""
    swap = np.arange(NUM_JOINTS)
    swap[list(H36M17_LEFT) + list(H36M17_RIGHT)] = list(H36M17_RIGHT) + list(H36M17_LEFT)
    return swap


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class WindowLifter(nn.Module):
    """What every base lifter shares: 2r + 1 input frames spaced `dilation` apart around the
    predicted frame, input standardisation, mirror augmentation and flip test, and lifting a
    whole sequence. Subclasses build the network and define `forward`."""

    def __init__(self, radius: int, dilation: int, flip_test: bool):
        super().__init__()
        if radius < 0 or dilation < 1:
            raise ValueError(f"radius must be >= 0 and dilation >= 1, got {radius}, {dilation}")
        self.radius, self.dilation, self.flip_test = int(radius), int(dilation), bool(flip_test)
        inputs = self.frames * NUM_JOINTS * 2
        # Input standardisation, fitted on the training frames (set_input_statistics) and
        # saved with the weights.
        self.register_buffer("input_mean", torch.zeros(inputs))
        self.register_buffer("input_std", torch.ones(inputs))
        self.register_buffer("mirror", torch.from_numpy(mirror_permutation()), persistent=False)

    def standardised(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, frames, 17, 2) -> (B, frames * 34), standardised."""
        return (windows.reshape(windows.shape[0], -1) - self.input_mean) / self.input_std

    @property
    def frames(self) -> int:
        return 2 * self.radius + 1

    @property
    def offsets(self) -> np.ndarray:
        """Frame offsets of the input window relative to the predicted (centre) frame."""
        return np.arange(-self.radius, self.radius + 1) * self.dilation

    @property
    def receptive_field(self) -> int:
        return 2 * self.radius * self.dilation + 1

    def set_input_statistics(self, windows: np.ndarray) -> None:
        """Standardise inputs with the mean and std of (N, frames, 17, 2) training windows."""
        flat = np.asarray(windows, np.float64).reshape(len(windows), -1)
        self.input_mean.copy_(torch.from_numpy(flat.mean(0)).float())
        self.input_std.copy_(torch.from_numpy(np.maximum(flat.std(0), 1e-3)).float())

    def mirrored(self, windows: torch.Tensor) -> torch.Tensor:
        """The left/right mirror image of 2D windows or 3D poses (x negated, sides swapped).
        Mirroring normalised screen coordinates about x = 0 is a camera mirrored about its
        vertical mid-line: close to the principal point for Human3.6M's cameras."""
        flipped = windows[..., self.mirror, :].clone()
        flipped[..., 0] = -flipped[..., 0]
        return flipped

    def predict(self, windows: torch.Tensor) -> torch.Tensor:
        """Evaluation-mode prediction, averaged with the mirrored input's (flip_test)."""
        pose = self(windows)
        if self.flip_test:
            pose = 0.5 * (pose + self.mirrored(self(self.mirrored(windows))))
        return pose

    def window_index(self, num_frames: int, frames: np.ndarray | None = None) -> np.ndarray:
        """(N, 2r + 1) input frame indices for the centre frames `frames` (default: all) of a
        sequence; frames past either end repeat the edge frame."""
        centres = np.arange(num_frames) if frames is None else np.asarray(frames)
        return np.clip(centres[:, None] + self.offsets[None, :], 0, num_frames - 1)

    @torch.no_grad()
    def lift(self, keypoints_2d: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """A whole (F, 17, 2) normalised 2D sequence -> (F, 17, 3), one window per frame."""
        keypoints_2d = np.asarray(keypoints_2d, np.float32)
        if keypoints_2d.ndim != 3 or keypoints_2d.shape[1:] != (NUM_JOINTS, 2):
            raise ValueError(f"keypoints_2d must be (F, {NUM_JOINTS}, 2), got {keypoints_2d.shape}")
        was_training = self.training
        self.eval()
        index = self.window_index(len(keypoints_2d))
        device = self.input_mean.device
        out = [self.predict(torch.from_numpy(keypoints_2d[index[i:i + batch_size]]).to(device))
               .cpu().numpy() for i in range(0, len(index), batch_size)]
        self.train(was_training)
        return np.concatenate(out).astype(np.float32)



class WindowMLPLifter(WindowLifter):
    """(B, 2r + 1, 17, 2) normalised 2D frames -> (B, 17, 3) root-relative metres."""

    def __init__(self, radius: int = 4, dilation: int = 2, width: int = 1024, blocks: int = 2,
                 dropout: float = 0.1, flip_test: bool = True):
        super().__init__(radius, dilation, flip_test)
        inputs = self.frames * NUM_JOINTS * 2
        self.stem = nn.Sequential(nn.Linear(inputs, width), nn.BatchNorm1d(width), nn.ReLU(),
                                  nn.Dropout(dropout))
        self.blocks = nn.Sequential(*(ResidualBlock(width, dropout) for _ in range(blocks)))
        self.head = nn.Linear(width, NUM_JOINTS * 3)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        flat = self.standardised(windows)
        out = self.head(self.blocks(self.stem(flat))).reshape(-1, NUM_JOINTS, 3) * OUTPUT_SCALE
        return out - out[:, ROOT:ROOT + 1]
