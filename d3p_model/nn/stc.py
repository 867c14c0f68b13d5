"""Spatio-temporal criss-cross (STC) attention, as in STCFormer.

Pose tokens have shape (B, T, J, C). Half of the channels attend over the joints of each
frame (spatial), the other half over the frames of each joint (temporal); the halves are
concatenated and projected. This costs far less than full attention over T*J tokens and is
the block both the base lifter and the refiner's denoiser are built from.
"""

import torch
from torch import nn
from torch.nn import functional as F


class STCAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        if dim % 2 or (dim // 2) % heads:
            raise ValueError(f"dim {dim} must split into two halves divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _attend(self, q, k, v):
        # q, k, v: (N, L, C') -> (N, L, C'), attention over L with self.heads heads
        n, length, c = q.shape
        h = self.heads
        q, k, v = (t.reshape(n, length, h, c // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, length, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, j, c = x.shape
        half = c // 2
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # spatial: sequences of J joints, one per (batch, frame)
        spatial = self._attend(*(z[..., :half].reshape(b * t, j, half) for z in (q, k, v)))
        spatial = spatial.reshape(b, t, j, half)
        # temporal: sequences of T frames, one per (batch, joint)
        temporal = self._attend(
            *(z[..., half:].transpose(1, 2).reshape(b * j, t, half) for z in (q, k, v)))
        temporal = temporal.reshape(b, j, t, half).transpose(1, 2)
        return self.proj(torch.cat([spatial, temporal], dim=-1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class STCBlock(nn.Module):
    """Pre-norm residual block: STC attention, then an MLP."""

    def __init__(self, dim: int, heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = STCAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))
