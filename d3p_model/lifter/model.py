"""A small seq2seq temporal lifter: a window of 2D poses -> the same window in 3D.

Built from the STC blocks the refiner's denoiser uses, so base estimator and refiner share an
architecture family, as in the paper (which refines STCFormer/MixSTE outputs).
"""

import torch
from torch import nn

from ..nn import STCBlock
from ..skeleton import NUM_JOINTS, ROOT


class TemporalLifter(nn.Module):
    def __init__(self, window: int, depth: int = 3, width: int = 64, heads: int = 4,
                 mlp_ratio: float = 2.0):
        super().__init__()
        self.window = window
        self.embed = nn.Linear(2, width)
        self.joint_embedding = nn.Parameter(torch.zeros(NUM_JOINTS, width))
        self.time_embedding = nn.Parameter(torch.zeros(window, 1, width))
        nn.init.trunc_normal_(self.joint_embedding, std=0.02)
        nn.init.trunc_normal_(self.time_embedding, std=0.02)
        self.blocks = nn.ModuleList(STCBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3)

    def forward(self, keypoints_2d: torch.Tensor) -> torch.Tensor:
        """(B, T, 17, 2) normalised screen coordinates -> (B, T, 17, 3) root-relative metres."""
        x = self.embed(keypoints_2d) + self.joint_embedding + self.time_embedding
        for block in self.blocks:
            x = block(x)
        out = self.head(self.norm(x))
        return out - out[..., ROOT:ROOT + 1, :]
