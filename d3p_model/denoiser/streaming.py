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
           history (B, M, 2, 17, heads, W - 1, head channels): cached [key, value] per
           layer, in W - 1 slots of any order,
           history_offset (B, W - 1) int64: how many frames before the new one each slot's
           frame is, 0 for an empty slot (a new track has only empty slots);
  outputs  refined (B, 17, 3) root-relative, and history_new (B, M, 2, 17, heads, 1, head
           channels): the new frame's keys and values, which the caller writes into the
           slot it frees (causal_stream.advance_history): a ring buffer, so no call copies
           the cache to shift it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion.process import ddim_timesteps, forward_noisy_pose, predict_clean
from ..skeleton import ROOT


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
                history: torch.Tensor, history_offset: torch.Tensor):
        net = self.denoiser
        y_t = pose_3d - pose_3d[:, ROOT:ROOT + 1]
        y0 = y_t
        layer = 0
        new = []
        slot_mask = torch.zeros(history_offset.shape, dtype=y_t.dtype, device=y_t.device)
        slot_mask = slot_mask.masked_fill(history_offset == 0, float("-inf"))
        slot_mask = slot_mask.view(-1, 1, 1, 1, net.config.window - 1)
        layers = history.unbind(1)      # one Split for all layers, not a Gather per layer
        for t_now, t_next in zip(self.grid[:-1], self.grid[1:]):
            t = torch.full((1,), t_now, dtype=torch.long, device=pose_3d.device)
            step = net.step_embedding(t, y_t.dtype)
            tokens = net.tokens(y_t, keypoints_2d)                          # (B, 17, C)
            for block in net.blocks:
                for attn, prepare in ((block.attn, block.norm1),
                                      (block.step.attn, lambda x: block.step.modulate(x, step))):
                    out, key_value = attn.stream(prepare(tokens), layers[layer],
                                                 history_offset, slot_mask)
                    tokens = tokens + out
                    new.append(key_value)                       # (B, 2, 17, heads, 1, d)
                    layer += 1
                tokens = tokens + block.mlp(block.norm3(tokens)[:, None])[:, 0]
            error = net.output(tokens) * self.error_scale
            y0 = predict_clean(y_t, error, t, self.alpha_bar)
            y_t = forward_noisy_pose(y0, error, torch.full_like(t, t_next), self.alpha_bar)
        return y0 - y0[:, ROOT:ROOT + 1], torch.stack(new, dim=1)
