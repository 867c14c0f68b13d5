"""PoseDenoiser (design: refiner.md, "PoseDenoiser and loss").

Tokens are (B, T, J, d): one per joint per frame, from the noisy 3D joint (3) and its 2D
keypoint (2). Each denoising block is
  1. STC attention on the pose tokens (spatial over joints, temporal over frames),
  2. a timestep module: the embedded diffusion step modulates the tokens (FiLM: scale and
     shift after the norm), then STC attention relates tokens and step,
  3. an MLP,
each pre-norm with a residual. The output is the error per joint in units of a fixed
per-dimension scale; the root joint's error is forced to 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..nn.stc import MLP, STCAttention
from ..skeleton import H36M17_PARENTS, NUM_JOINTS, ROOT


@dataclass
class DenoiserConfig:
    window: int = 27
    depth: int = 4
    width: int = 32
    heads: int = 1
    mlp_ratio: float = 2.0
    timesteps: int = 50          # largest diffusion step the embedding must represent
    # Input features per joint token: the pose in metres times pose_scale (a body spans
    # ~1.7 m, errors are centimetres: O(1) inputs let a small net resolve them) and, with
    # bone_inputs, the bone vector to the parent joint (bone lengths that change over
    # time are what tells a lifter's output from a correct skeleton).
    pose_scale: float = 1.0
    bone_inputs: bool = False
    # With reprojection_inputs, each joint also gets how far its 3D position lies from its
    # 2D keypoint under the frame's best weak-perspective camera (in metres, times
    # pose_scale): a joint the lifter moved off its keypoint shows here directly, while a
    # correct skeleton shows only the detector's noise. The network could compute this
    # from the pose and keypoint inputs, but a 4-block net does not learn the per-frame
    # least-squares fit it needs (docs/refiner.md, "2D consistency").
    reprojection_inputs: bool = False
    # With bone_length_inputs, each joint also gets how much its bone to the parent is longer
    # than that bone's mean length over the window, and the RMS of that over the window
    # (bone_length_change). A correct skeleton keeps its bone lengths, a lifter's output
    # does not: the cue to leave a skeleton, or a joint, alone, which the net did not learn
    # from the bone vectors (docs/refiner.md, "Bone lengths"). It needs the whole window:
    # not for a causal model.
    bone_length_inputs: bool = False
    # output_gate: each joint's predicted error is multiplied by 2 sigmoid(g), g a linear
    # function of the same final token (starting at 0, i.e. a factor of 1: a model continued
    # from one without the gate starts as that model). Behind the final LayerNorm the head
    # sees unit-norm tokens, so the net cannot easily say "no correction": trained with a
    # third of its windows exactly correct, it still moved a correct skeleton by 6 mm
    # (docs/refiner.md, "Bone lengths").
    output_gate: bool = False
    # causal: the temporal attention sees each frame and its window - 1 predecessors only
    # (no absolute frame positions), so the model takes sequences of any length and a stream
    # refines each new frame alone from cached keys (denoiser/streaming.py; docs/refiner.md,
    # "A causal model for streaming"). False: the window of `window` frames, both ways.
    causal: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "DenoiserConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown denoiser settings {sorted(unknown)}; known: {sorted(known)}")
        return cls(**values)


def reprojection_residual(pose: torch.Tensor, keypoints_2d: torch.Tensor) -> torch.Tensor:
    """(..., J, 3) pose, (..., J, 2) normalised keypoints -> (..., J, 2) residual, pose units.

    Per frame, the scale s and shift c minimising |s * pose_xy + c - keypoints|^2 (a weak-
    perspective camera; both frames have x right, y down); the residual is
    (keypoints - c) / s - pose_xy, i.e. where the keypoint says the joint is, minus where the
    pose puts it, in the pose's own units.
    """
    xy = pose.split([2, 1], dim=-1)[0]      # split, not slice: no Slice node in the export
    xy_centred = xy - xy.mean(dim=-2, keepdim=True)
    kp_centred = keypoints_2d - keypoints_2d.mean(dim=-2, keepdim=True)
    spread = (xy_centred * xy_centred).sum(dim=(-2, -1), keepdim=True)
    # a degenerate (collapsed) pose has no scale: its residual is then the keypoints
    # themselves scaled by 1, bounded, never inf/NaN
    scale = (xy_centred * kp_centred).sum(dim=(-2, -1), keepdim=True) / spread.clamp_min(1e-6)
    scale = torch.where(scale.abs() < 1e-3, torch.ones_like(scale), scale)
    return kp_centred / scale - xy_centred


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sin/cos features at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / max(half - 1, 1))
    angles = t.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class TimestepModule(nn.Module):
    """FiLM the tokens with the step embedding, then STC attention; residual outside."""

    def __init__(self, dim: int, heads: int, causal_window: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.film = nn.Linear(dim, 2 * dim)
        nn.init.zeros_(self.film.weight)   # start as plain norm: identity modulation
        nn.init.zeros_(self.film.bias)
        self.attn = STCAttention(dim, heads, causal_window)

    def modulate(self, tokens: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        # split with a fixed size (not chunk): the exported graph needs no shape arithmetic
        width = self.norm.normalized_shape[0]
        scale, shift = self.film(step).split(width, dim=-1)
        shape = (-1,) + (1,) * (tokens.dim() - 2) + (width,)
        return self.norm(tokens) * (1 + scale.reshape(shape)) + shift.reshape(shape)

    def forward(self, tokens: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return self.attn(self.modulate(tokens, step))


class DenoisingBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, causal_window: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = STCAttention(dim, heads, causal_window)
        self.step = TimestepModule(dim, heads, causal_window)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))

    def forward(self, tokens: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm1(tokens))
        tokens = tokens + self.step(tokens, step)
        return tokens + self.mlp(self.norm3(tokens))


def input_features(config: DenoiserConfig) -> int:
    """Features per joint token, in this order: pose (3), keypoint (2), bone (3), residual (2),
    bone-length change and its window RMS (2)."""
    return 3 + 2 + (3 if config.bone_inputs else 0) + (2 if config.reprojection_inputs else 0) \
        + (2 if config.bone_length_inputs else 0)


# Unit of the bone-length inputs: a lifter's bones change by millimetres within a window, so
# in this unit its changes are O(1); in metres (as the pose inputs) they were too small for
# the network to react to (docs/refiner.md, "Bone lengths").
BONE_LENGTH_UNIT_M = 0.002


def bone_length_change(pose: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
    """(..., T, J, 3) pose in metres -> (..., T, J, 2): how much each joint's bone to its
    parent is longer in each frame than its mean over the T frames, and the RMS of that over
    the window (the same in every frame: 0 for a bone that keeps its length), both in units
    of BONE_LENGTH_UNIT_M. The root's bone is empty: 0."""
    bone = pose - pose[..., parents, :]
    length = (bone.square().sum(dim=-1, keepdim=True) + 1e-12).sqrt()
    change = (length - length.mean(dim=-3, keepdim=True)) / BONE_LENGTH_UNIT_M
    spread = change.square().mean(dim=-3, keepdim=True).sqrt().expand_as(change)
    return torch.cat([change, spread], dim=-1)


class PoseDenoiser(nn.Module):
    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = config
        if config.causal and config.bone_length_inputs:
            raise ValueError("bone_length_inputs need the whole window: a causal model cannot "
                             "have them")
        d = config.width
        self.embed = nn.Linear(input_features(config), d)
        self.joint_embedding = nn.Parameter(torch.zeros(1, 1, NUM_JOINTS, d))
        nn.init.trunc_normal_(self.joint_embedding, std=0.02)
        if not config.causal:   # a causal model has frame offsets in its attention instead
            self.frame_embedding = nn.Parameter(torch.zeros(1, config.window, 1, d))
            nn.init.trunc_normal_(self.frame_embedding, std=0.02)
        self.step_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        band = config.window if config.causal else None
        self.blocks = nn.ModuleList(
            DenoisingBlock(d, config.heads, config.mlp_ratio, band) for _ in range(config.depth))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 3)
        if config.output_gate:
            self.gate = nn.Linear(d, 1)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)
        root_mask = torch.ones(NUM_JOINTS, 1)
        root_mask[ROOT] = 0
        self.register_buffer("root_mask", root_mask, persistent=False)
        parents = torch.tensor([max(p, 0) for p in H36M17_PARENTS])
        self.register_buffer("parents", parents, persistent=False)

    def forward(self, noisy_pose: torch.Tensor, keypoints_2d: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
        """(B, T, 17, 3) y_t, (B, T, 17, 2) x, (B,) or (1,) steps -> (B, T, 17, 3) normalised error.

        T is the model's window; a causal model takes any T >= 1 (its frame i sees frames
        i - window + 1 .. i)."""
        batch, frames, joints, _ = noisy_pose.shape
        if (frames != self.config.window and not self.config.causal) or joints != NUM_JOINTS \
                or frames < 1:
            raise ValueError(f"PoseDenoiser expects windows of {self.config.window} frames x "
                             f"{NUM_JOINTS} joints, got {tuple(noisy_pose.shape)}")
        tokens = self.tokens(noisy_pose, keypoints_2d)
        if not self.config.causal:
            tokens = tokens + self.frame_embedding
        step = self.step_embedding(t, tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens, step)
        return self.output(tokens)

    def output(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., 17, width) final tokens -> (..., 17, 3) normalised error (root: 0)."""
        final = self.norm(tokens)
        error = self.head(final)
        if self.config.output_gate:
            error = error * 2 * torch.sigmoid(self.gate(final))
        return error * self.root_mask

    def tokens(self, noisy_pose: torch.Tensor, keypoints_2d: torch.Tensor) -> torch.Tensor:
        """(..., 17, 3) pose, (..., 17, 2) keypoints -> (..., 17, width) embedded joints."""
        pose = noisy_pose * self.config.pose_scale
        features = [pose, keypoints_2d]
        if self.config.bone_inputs:
            features.append(pose - pose[..., self.parents, :])
        if self.config.reprojection_inputs:
            features.append(reprojection_residual(pose, keypoints_2d))
        if self.config.bone_length_inputs:
            features.append(bone_length_change(noisy_pose, self.parents))
        return self.embed(torch.cat(features, dim=-1)) + self.joint_embedding[0, 0]

    def step_embedding(self, t: torch.Tensor, dtype) -> torch.Tensor:
        return self.step_mlp(sinusoidal_embedding(t, self.config.width).to(dtype))
