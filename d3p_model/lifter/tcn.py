"""A lifter of another family: a temporal convolutional network over 2D frames.

Pavllo et al. (2019, VideoPose3D)'s design: a 1-D convolution over time with kernel 3, then
residual blocks whose convolutions dilate by 3 each (receptive field 3^(blocks + 1) frames,
27 with two blocks), each followed by a 1x1 convolution; the output is the centre frame.
For one output frame the dilated convolutions reduce to strided ones (kernel 3, stride 3:
27 -> 9 -> 3 -> 1 positions), VideoPose3D's "optimised training" form, which is what runs
here: the same function of the 27 frames at a fifth of the cost.
d3p uses it as the estimator the refiner never saw (docs/refiner.md): its errors come from
convolutions over 27 consecutive frames, not from an MLP over 9 frames spaced 2 apart.
"""

from __future__ import annotations

import torch
from torch import nn

from ..skeleton import NUM_JOINTS, ROOT
from .model import OUTPUT_SCALE, WindowLifter


def _conv(width_in: int, width_out: int, kernel: int, stride: int, dropout: float):
    return nn.Sequential(nn.Conv1d(width_in, width_out, kernel, stride=stride, bias=False),
                         nn.BatchNorm1d(width_out), nn.ReLU(), nn.Dropout(dropout))


class TemporalConvLifter(WindowLifter):
    """(B, 3^(blocks+1), 17, 2) consecutive normalised 2D frames -> (B, 17, 3) metres."""

    def __init__(self, blocks: int = 2, width: int = 256, dropout: float = 0.2,
                 flip_test: bool = True):
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        super().__init__(radius=(3 ** (blocks + 1) - 1) // 2, dilation=1, flip_test=flip_test)
        self.stem = _conv(NUM_JOINTS * 2, width, 3, 3, dropout)
        self.strided = nn.ModuleList(_conv(width, width, 3, 3, dropout) for _ in range(blocks))
        self.pointwise = nn.ModuleList(_conv(width, width, 1, 1, dropout) for _ in range(blocks))
        self.head = nn.Conv1d(width, NUM_JOINTS * 3, 1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        x = self.standardised(windows).reshape(windows.shape[0], self.frames, NUM_JOINTS * 2)
        x = self.stem(x.transpose(1, 2))
        for strided, pointwise in zip(self.strided, self.pointwise):
            # the residual is the centre position of each group of three
            x = x[..., 1::3] + pointwise(strided(x))
        out = self.head(x)[..., 0].reshape(-1, NUM_JOINTS, 3) * OUTPUT_SCALE
        return out - out[:, ROOT:ROOT + 1]
