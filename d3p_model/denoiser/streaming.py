"""Causal streaming: the K-step refinement of one new frame per person, from cached keys.

A causal PoseDenoiser (`DenoiserConfig.causal`) lets frame i's temporal attention see frames
i - W + 1 .. i only, with frame offsets instead of absolute positions. Every other part of
the network works frame by frame, and the DDIM update too, so once a frame has gone through
a layer its temporal key and value never change. A stream keeps them, for the W - 1 previous
frames of each of the M = steps x depth x 2 attention layers, and runs only the new frame's
17 tokens through the network: 1/T of the windowed model's tokens per published frame. The
result is exactly the last frame of the causal model run over the whole sequence so far
(tests/test_streaming_model.py), which is how `d3p refine` and the training use it.

`CausalStreamStep` is a torch module so that it exports as one ONNX graph (export/onnx.py):
  inputs   keypoints_2d (B, 17, 2), pose_3d (B, 17, 3) of the new frame,
           history (B, M, 2, W - 1, 17, C/2): cached [key, value] per layer, oldest first,
           history_valid (B, W - 1): 1 where that slot holds a frame (a new track has none);
  outputs  refined (B, 17, 3) root-relative, and history / history_valid shifted by one
           frame with this frame appended: the next call's inputs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.process import ddim_timesteps, forward_noisy_pose, predict_clean
from ..skeleton import NUM_JOINTS, ROOT


def history_shape(config, steps: int) -> tuple[int, int, int, int, int]:
    """Per person: (layers M, key/value 2, W - 1 frames, 17 joints, C / 2 channels)."""
    return (steps * config.depth * 2, 2, config.window - 1, NUM_JOINTS, config.width // 2)


class CausalStreamStep(nn.Module):
    def __init__(self, denoiser, error_scale: torch.Tensor, alpha_bar: torch.Tensor,
                 steps: int):
        super().__init__()
        if not denoiser.config.causal:
            raise ValueError("streaming needs a causal denoiser (model.json denoiser.causal)")
        if denoiser.config.window < 2:
            raise ValueError("a causal window of 1 frame has nothing to cache")
        self.denoiser = denoiser
        self.steps = int(steps)
        self.grid = ddim_timesteps(int(alpha_bar.shape[0]) - 1, self.steps)
        self.register_buffer("error_scale", error_scale.detach().clone(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar.detach().clone(), persistent=False)

    def forward(self, keypoints_2d: torch.Tensor, pose_3d: torch.Tensor,
                history: torch.Tensor, history_valid: torch.Tensor):
        net = self.denoiser
        y_t = pose_3d - pose_3d[:, ROOT:ROOT + 1]
        y0 = y_t
        layer = 0
        new = []
        for t_now, t_next in zip(self.grid[:-1], self.grid[1:]):
            t = torch.full((1,), t_now, dtype=torch.long, device=pose_3d.device)
            step = net.step_embedding(t, y_t.dtype)
            tokens = net.tokens(y_t, keypoints_2d)                          # (B, 17, C)
            for block in net.blocks:
                for attn, prepare in ((block.attn, block.norm1),
                                      (block.step.attn, lambda x: block.step.modulate(x, step))):
                    out, key, value = attn.stream(prepare(tokens), history[:, layer, 0],
                                                  history[:, layer, 1], history_valid)
                    tokens = tokens + out
                    new.append(torch.stack([key, value], dim=1))            # (B, 2, 17, C/2)
                    layer += 1
                tokens = tokens + block.mlp(block.norm3(tokens)[:, None])[:, 0]
            error = net.head(net.norm(tokens)) * net.root_mask * self.error_scale
            y0 = predict_clean(y_t, error, t, self.alpha_bar)
            y_t = forward_noisy_pose(y0, error, torch.full_like(t, t_next), self.alpha_bar)
        refined = y0 - y0[:, ROOT:ROOT + 1]
        history = torch.cat([history[:, :, :, 1:], torch.stack(new, dim=1)[:, :, :, None]],
                            dim=3)
        history_valid = torch.cat([history_valid[:, 1:], torch.ones_like(history_valid[:, :1])],
                                  dim=1)
        return refined, history, history_valid
