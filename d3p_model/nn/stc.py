"""Spatio-temporal criss-cross (STC) attention, as in STCFormer.

Pose tokens have shape (B, T, J, C). Half of the channels attend over the joints of each
frame (spatial), the other half over the frames of each joint (temporal); the halves are
concatenated and projected. This costs far less than full attention over T*J tokens and is
the block both the base lifter and the refiner's denoiser are built from.

Channel layout of the qkv projection (fixed by the trained weights): [q | k | v], each
[spatial half | temporal half], each half split into `heads` heads of C / 2 / heads channels.

Two schedules of the same computation (benchmarks/denoiser_speed.py times both):
- eager PyTorch: F.scaled_dot_product_attention per half. On this project's CPU its fused
  kernel beat explicit matmul + softmax in every layout tried (the exp of the softmax bounds
  attention at head dim 8, and the fused kernel has the faster exp), and reading q/k/v as
  strided views instead of the copies below was no faster (slower at batch 10: strided
  gathers of a qkv output larger than the cache);
- ONNX export: explicit Gemm / MatMul / Softmax with few layout nodes, which ONNX Runtime
  runs ~20% faster than the exporter's own decomposition of SDPA.
"""

import warnings

import torch
from torch import nn
from torch.nn import functional as F


class STCAttention(nn.Module):
    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        if dim % 2 or (dim // 2) % heads:
            raise ValueError(f"dim {dim} must split into two halves divisible by heads {heads}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // 2 // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # The exported graph folds the softmax scale into the query rows of qkv (constant
        # folding turns weight * scale into one initializer). Not saved: the state_dict
        # keeps exactly the trained parameters.
        query_scale = torch.ones(3 * dim)
        query_scale[:dim] = self.head_dim ** -0.5
        self.register_buffer("query_scale", query_scale, persistent=False)

    def _attend(self, q, k, v):
        # q, k, v: (N, L, C') -> (N, L, C'), attention over L with self.heads heads
        n, length, c = q.shape
        h = self.heads
        q, k, v = (t.reshape(n, length, h, c // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, length, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _tracing():
            return self._forward_exported(x)
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

    def _forward_exported(self, x: torch.Tensor) -> torch.Tensor:
        """The same attention as matmul + softmax, shaped for ONNX Runtime.

        The exporter would decompose SDPA anyway (scale applied to q and k separately, one
        Transpose and Slice per tensor). Here q, k and v of each half come from their own
        Gemm (weights: slices of the trained qkv with the softmax scale folded into the
        query rows, constant-folded into initializers), each laid out by one Transpose, k
        directly as k^T; the token grid (T, J) is static, only the batch is dynamic.
        """
        t, j = _static_token_grid(x)
        h, d, c, half = self.heads, self.head_dim, self.dim, self.dim // 2
        weight = (self.qkv.weight * self.query_scale[:, None]).view(3, 2, half, c)
        bias = (self.qkv.bias * self.query_scale).view(3, 2, half)
        tokens = x.reshape(-1, c)

        def project(qkv: int, part: int, order: tuple) -> torch.Tensor:
            out = F.linear(tokens, weight[qkv, part], bias[qkv, part])
            return out.view(-1, t, j, h, d).permute(*order)

        # spatial: (B, T, h, J, d), k as (B, T, h, d, J); temporal: (B, J, h, T, d)
        spatial = _softmax_attention(project(0, 0, (0, 1, 3, 2, 4)),
                                     project(1, 0, (0, 1, 3, 4, 2)),
                                     project(2, 0, (0, 1, 3, 2, 4)))
        temporal = _softmax_attention(project(0, 1, (0, 2, 3, 1, 4)),
                                      project(1, 1, (0, 2, 3, 4, 1)),
                                      project(2, 1, (0, 2, 3, 1, 4)))
        spatial = spatial.permute(0, 1, 3, 2, 4).reshape(-1, half)
        temporal = temporal.permute(0, 3, 1, 2, 4).reshape(-1, half)
        return self.proj(torch.cat([spatial, temporal], dim=-1)).view(-1, t, j, c)


def _tracing() -> bool:
    """True while the legacy ONNX exporter (or torch.jit.trace) records the graph.

    Not torch.onnx.is_in_onnx_export(): that one imports on every call (~4 us, 12 calls per
    denoiser call); this is a C flag read (~0.3 us).
    """
    return torch.jit.is_tracing()


def _static_token_grid(x: torch.Tensor) -> tuple:
    """(T, J) of (B, T, J, C) tokens as Python ints while exporting.

    Frames and joints are fixed by the model (only the batch is dynamic), so the exported
    graph may hold them as constants instead of Shape/Gather/Concat chains.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return int(x.shape[1]), int(x.shape[2])


def _softmax_attention(q: torch.Tensor, k_transposed: torch.Tensor,
                       v: torch.Tensor) -> torch.Tensor:
    """q (..., L, d) already scaled, k^T (..., d, L), v (..., L, d) -> (..., L, d)."""
    return torch.softmax(q @ k_transposed, dim=-1) @ v


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out or dim)

    def forward(self, x):
        if _tracing():
            # 2D tokens: the exporter writes Gemm (bias fused) instead of MatMul + Add
            grid = _static_token_grid(x)
            out = self.fc2(F.gelu(self.fc1(x.reshape(-1, self.fc1.in_features))))
            return out.view(-1, *grid, self.fc2.out_features)
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
