"""The causal denoiser and its per-frame stream (d3p_model/denoiser/streaming.py)."""

import numpy as np
import pytest
import torch

from d3p_model.causal_stream import advance_history, history_shape
from d3p_model.denoiser.model import DenoiserConfig, PoseDenoiser
from d3p_model.denoiser.streaming import CausalStreamStep
from d3p_model.diffusion.process import ddim_refine
from d3p_model.diffusion.schedule import cosine_alpha_bar
from d3p_model.skeleton import ROOT


def _causal_denoiser(window=5, seed=0, **extra):
    torch.manual_seed(seed)
    config = DenoiserConfig(window=window, depth=2, width=16, heads=2, causal=True,
                            pose_scale=4.0, bone_inputs=True, reprojection_inputs=True,
                            **extra)
    net = PoseDenoiser(config).eval()
    with torch.no_grad():
        for param in net.parameters():   # FiLM and offsets start at zero: make them matter
            param.add_(0.3 * torch.randn_like(param))
    return net


def _sequence(frames, seed=1):
    gen = torch.Generator().manual_seed(seed)
    pose = 0.3 * torch.randn(1, frames, 17, 3, generator=gen)
    pose = pose - pose[..., ROOT:ROOT + 1, :]
    keypoints = 0.5 * torch.randn(1, frames, 17, 2, generator=gen)
    return keypoints, pose


def _offline(net, keypoints, pose, scale, alpha_bar, steps):
    return ddim_refine(pose, lambda y, t: net(y, keypoints, t) * scale, alpha_bar, steps)


class _Ring:
    """The people's histories as the stream step takes them (numpy ring buffers)."""

    def __init__(self, net, people, steps):
        self.history = np.zeros((people, *history_shape(net.config.to_dict(), steps)), np.float32)
        self.offsets = np.zeros((people, net.config.window - 1), np.int64)

    def step(self, stream, keypoints, pose):
        refined, new = stream(keypoints, pose, torch.from_numpy(self.history),
                              torch.from_numpy(self.offsets))
        for row in range(len(self.history)):
            advance_history(self.history[row], self.offsets[row], new[row].numpy())
        return refined

    def restart(self, row):
        self.history[row] = 0
        self.offsets[row] = 0


@pytest.mark.parametrize("steps", [1, 2])
def test_the_stream_equals_the_causal_model_over_the_whole_sequence(steps):
    net = _causal_denoiser()
    scale = 0.05 + torch.rand(17, 3)
    alpha_bar = cosine_alpha_bar(50, 0.008)
    keypoints, pose = _sequence(23)
    with torch.no_grad():
        offline = _offline(net, keypoints, pose, scale, alpha_bar, steps)[0]
        stream = CausalStreamStep(net, scale, alpha_bar, steps)
        ring = _Ring(net, 1, steps)
        for frame in range(pose.shape[1]):
            refined = ring.step(stream, keypoints[:, frame], pose[:, frame])
            torch.testing.assert_close(refined[0], offline[frame] - offline[frame, ROOT],
                                       atol=1e-5, rtol=0)
    # the ring holds the last W - 1 frames, each slot once
    assert sorted(ring.offsets[0]) == list(range(1, net.config.window))


def test_a_frame_does_not_depend_on_later_frames_or_on_frames_beyond_the_receptive_field():
    net = _causal_denoiser(window=4)
    keypoints, pose = _sequence(30)
    t = torch.tensor([50])
    with torch.no_grad():
        base = net(pose, keypoints, t)
        later = pose.clone()
        later[:, 20:] += 0.2                # the future changes
        changed = net(later, keypoints, t)
    torch.testing.assert_close(changed[:, :20], base[:, :20])
    assert not torch.allclose(changed[:, 20:], base[:, 20:])
    # depth 2 x 2 attention layers of a 4-frame band: frame i sees back to i - 12
    with torch.no_grad():
        early = pose.clone()
        early[:, :5] += 0.2
        moved = net(early, keypoints, t)
    torch.testing.assert_close(moved[:, 5 + 12:], base[:, 5 + 12:])
    assert not torch.allclose(moved[:, 5:5 + 12], base[:, 5:5 + 12])


def test_batched_stream_keeps_people_apart_and_a_new_track_starts_empty():
    net = _causal_denoiser()
    scale = torch.ones(17, 3) * 0.1
    alpha_bar = cosine_alpha_bar(50, 0.008)
    stream = CausalStreamStep(net, scale, alpha_bar, 2)
    kp_a, pose_a = _sequence(12, seed=2)
    kp_b, pose_b = _sequence(12, seed=3)
    with torch.no_grad():
        alone = _offline(net, kp_b, pose_b, scale, alpha_bar, 2)[0]
        ring = _Ring(net, 2, 2)
        for frame in range(12):
            if frame == 6:                  # person A's track restarts: its slots are emptied
                ring.restart(0)
                restart = frame
            refined = ring.step(stream, torch.cat([kp_a[:, frame], kp_b[:, frame]]),
                                torch.cat([pose_a[:, frame], pose_b[:, frame]]))
            torch.testing.assert_close(refined[1], alone[frame] - alone[frame, ROOT],
                                       atol=1e-5, rtol=0)
        a_restarted = _offline(net, kp_a[:, restart:], pose_a[:, restart:], scale, alpha_bar, 2)
        last = a_restarted[0, -1] - a_restarted[0, -1, ROOT]
    torch.testing.assert_close(refined[0], last, atol=1e-5, rtol=0)


def test_a_windowed_model_refuses_to_stream_and_a_causal_one_takes_any_length():
    windowed = PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, heads=2))
    with pytest.raises(ValueError, match="causal"):
        CausalStreamStep(windowed, torch.ones(17, 3), cosine_alpha_bar(50, 0.008), 2)
    with pytest.raises(ValueError, match="windows of 5"):
        windowed(torch.zeros(1, 7, 17, 3), torch.zeros(1, 7, 17, 2), torch.tensor([3]))
    causal = _causal_denoiser()
    for frames in (1, 5, 7):
        out = causal(torch.zeros(2, frames, 17, 3), torch.zeros(2, frames, 17, 2),
                     torch.tensor([3]))
        assert out.shape == (2, frames, 17, 3) and torch.isfinite(out).all()
    assert "frame_embedding" not in dict(causal.named_parameters())
    assert np.isclose(sum(p.numel() for n, p in causal.named_parameters() if "offset_bias" in n),
                      2 * 2 * 2 * 5)
