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
  runs ~20% faster than the exporter's own decomposition of SDPA, and the heads stacked as
  rows instead of transposed out (_forward_exported: 10-17% faster again at 1 and 16
  windows, docs/performance.md; ORT's fused MultiHeadAttention contrib op was slower).
"""

import warnings

import torch
from torch import nn
from torch.nn import functional as F


class STCAttention(nn.Module):
    """causal_window W: the temporal half attends to each frame itself and its W - 1
    predecessors only (a band), with a learned bias per head and frame offset in place of
    absolute frame positions. A frame's keys then never change once computed, so a stream
    can cache them and refine each new frame alone (`stream`)."""

    def __init__(self, dim: int, heads: int = 4, causal_window: int | None = None):
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
        self.causal_window = causal_window
        if causal_window is not None:
            if causal_window < 1:
                raise ValueError(f"causal_window must be >= 1, got {causal_window}")
            # offset_bias[h, o]: score bias of head h for a key o frames before the query
            self.offset_bias = nn.Parameter(torch.zeros(heads, causal_window))

    def _attend(self, q, k, v):
        # q, k, v: (N, L, C') -> (N, L, C'), attention over L with self.heads heads
        n, length, c = q.shape
        h = self.heads
        q, k, v = (t.reshape(n, length, h, c // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, length, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal_window is not None:
            return self._forward_causal(x)
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

        Heads without head transposes: each token's query is written as `heads` rows, row
        h holding head h's channels and zeros elsewhere (the zeros are in the Gemm weights),
        so one (L*heads, C') x (C', L) MatMul gives every head's scores and the softmax
        normalises each row over the keys. The value product then mixes all channels per
        row; the output projection reads only row h's own head channels (its weights are
        zero elsewhere). This doubles the attention MACs at 2 heads but removes the layout
        nodes that set the time of this small graph: per attention, one Transpose into and
        one out of the temporal (B, J, T) order, and k^T fused into the MatMul by ONNX
        Runtime. The weights (scale folded into the queries) constant-fold into
        initializers; the token grid (T, J) is static, only the batch is dynamic.
        """
        t, j = _static_token_grid(x)
        h, c, half = self.heads, self.dim, self.dim // 2
        # head_mask[h, i]: channel i of a half belongs to head h
        head_mask = (torch.arange(half) // self.head_dim == torch.arange(h)[:, None]).to(x.dtype)
        weight = (self.qkv.weight * self.query_scale[:, None]).view(3, 2, half, c)
        bias = (self.qkv.bias * self.query_scale).view(3, 2, half)

        def attend(tokens: torch.Tensor, part: int, length: int) -> torch.Tensor:
            # tokens (N * length, C) in sequence order -> (N * length, heads * C')
            query = F.linear(tokens, (weight[0, part][None] * head_mask[:, :, None]).reshape(-1, c),
                             (bias[0, part][None] * head_mask).reshape(-1))
            query = query.view(-1, length * h, half)
            key = F.linear(tokens, weight[1, part], bias[1, part]).view(-1, length, half)
            value = F.linear(tokens, weight[2, part], bias[2, part]).view(-1, length, half)
            out = torch.softmax(query @ key.transpose(1, 2), dim=-1) @ value
            return out.reshape(-1, h * half)

        spatial = attend(x.reshape(-1, c), 0, j)                         # (b, t, j) order
        temporal = attend(x.transpose(1, 2).reshape(-1, c), 1, t)        # (b, j, t) order
        temporal = temporal.view(-1, j, t, h * half).transpose(1, 2).reshape(-1, h * half)
        # projection weights per row: head h's channels only, for each half
        proj = self.proj.weight.view(c, 2, 1, half) * head_mask
        return F.linear(torch.cat([spatial, temporal], dim=-1), proj.reshape(c, -1),
                        self.proj.bias).view(-1, t, j, c)

    # ------------------------------------------------------------ causal band
    def _forward_causal(self, x: torch.Tensor) -> torch.Tensor:
        """Any number of frames; frame i sees frames max(0, i - W + 1) .. i."""
        b, t, j, c = x.shape
        half, w = c // 2, self.causal_window
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        # spatial: as in forward(), sequences of J joints, one per (batch, frame)
        spatial = self._attend(*(z[..., :half].reshape(b * t, j, half) for z in (q, k, v)))
        spatial = spatial.reshape(b, t, j, half)
        # temporal: per (batch, joint) the W keys ending at each frame, zero-padded before
        # the first frame (masked out)
        qt = q[..., half:].transpose(1, 2).reshape(b, j, t, self.heads, self.head_dim) \
            * self.head_dim ** -0.5
        kt, vt = (nn.functional.pad(z[..., half:].transpose(1, 2), (0, 0, w - 1, 0))
                  .unfold(2, w, 1) for z in (k, v))            # (b, j, t, half, W)
        kt, vt = (z.reshape(b, j, t, self.heads, self.head_dim, w) for z in (kt, vt))
        scores = torch.einsum("bjthd,bjthdw->bjthw", qt, kt) + self._band_bias(t, x)
        out = torch.einsum("bjthw,bjthdw->bjthd", torch.softmax(scores, dim=-1), vt)
        temporal = out.reshape(b, j, t, half).transpose(1, 2)
        return self.proj(torch.cat([spatial, temporal], dim=-1))

    def _band_bias(self, frames: int, like: torch.Tensor) -> torch.Tensor:
        """(T, heads, W) additive scores: key slot s of frame i is frame i - W + 1 + s, its
        offset W - 1 - s; slots before the first frame get -inf."""
        w = self.causal_window
        slot_frame = torch.arange(frames, device=like.device)[:, None] - (w - 1) \
            + torch.arange(w, device=like.device)
        bias = self.offset_bias.flip(-1).to(like.dtype)[None].expand(frames, -1, -1)
        return bias.masked_fill((slot_frame < 0)[:, None, :], float("-inf"))

    def stream(self, x: torch.Tensor, past: torch.Tensor, offsets: torch.Tensor,
               slot_mask: torch.Tensor):
        """One new frame given the cached temporal keys/values of the W - 1 frames before it.

        x (B, J, C); past (B, 2, J, heads, W - 1, head_dim): [keys, values] in slots of any
        order; offsets (B, W - 1) int64: how many frames before this one each slot's frame
        is (0: an empty slot); slot_mask (B, 1, 1, 1, W - 1): -inf at empty slots, else 0.
        Returns the output (B, J, C) and this frame's [key, value] (B, 2, J, heads, 1,
        head_dim), which the caller writes into a slot (a ring buffer: no cache is copied
        to move it along). Equal to _forward_causal's last frame
        (tests/test_streaming_model.py). Static shapes, batch first, the cache in the layout
        its products read: the exported graph needs no shape arithmetic and no transposes
        of the cache.
        """
        j, h, d, c = int(x.shape[1]), self.heads, self.head_dim, self.dim
        half = c // 2
        # [q | k | v] x [spatial | temporal]: one Split, no per-part Gather
        qs, qt, ks, kt, vs, vt = self.qkv(x).split(half, dim=-1)              # (B, J, half)
        qs, ks, vs = (z.view(-1, j, h, d).transpose(1, 2) for z in (qs, ks, vs))  # (B, h, J, d)
        spatial = torch.softmax(qs @ ks.transpose(-1, -2) * d ** -0.5, dim=-1) @ vs
        spatial = spatial.transpose(1, 2).reshape(-1, j, half)
        q, k, v = (z.view(-1, j, h, 1, d) for z in (qt, kt, vt))            # (B, J, h, 1, d)
        q = q * d ** -0.5
        past_k, past_v = past.unbind(1)                                      # (B, J, h, W-1, d)
        slot_bias = self.offset_bias[:, offsets].permute(1, 0, 2)[:, None, :, None, :]
        past_scores = q @ past_k.transpose(-1, -2) + slot_bias + slot_mask   # (B, J, h, 1, W-1)
        own_score = (q * k).sum(-1, keepdim=True) + self.offset_bias[:, :1, None]
        weights = torch.softmax(torch.cat([past_scores, own_score], dim=-1), dim=-1)
        past_weights, own_weight = weights.split([self.causal_window - 1, 1], dim=-1)
        temporal = (past_weights @ past_v + own_weight * v).reshape(-1, j, half)
        out = self.proj(torch.cat([spatial, temporal], dim=-1))
        return out, torch.stack([k, v], dim=1)


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
