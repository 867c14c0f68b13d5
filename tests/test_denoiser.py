"""PoseDenoiser, FLOPs counting, and the D3PRefiner bundle (save/load, windows, errors)."""

import argparse
import json

import numpy as np
import pytest
import torch

from d3p_model.cnd import CONDITION_DIM, ERROR_DIM, ConditionalNoiseModel
from d3p_model.data.windows import extract_windows, stitch_windows, window_starts
from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
from d3p_model.denoiser.model import bone_length_change, reprojection_residual
from d3p_model.denoiser import flops
from d3p_model.refiner import D3PModelError, D3PRefiner, default_model_dir
from d3p_model.skeleton import H36M17_PARENTS

torch.set_num_threads(1)


def small_cnd(seed=0):
    rng = np.random.default_rng(seed)
    errors = 0.03 * rng.normal(size=(400, ERROR_DIM))
    conditions = rng.normal(size=(400, CONDITION_DIM))
    return ConditionalNoiseModel.fit(errors, conditions)


def small_refiner(window=9, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = DenoiserConfig(window=window, depth=1, width=16, heads=2)
    return D3PRefiner(PoseDenoiser(config), small_cnd(seed),
                      joint_uncertainty=np.linspace(0, 0.05, 17), **kwargs)


def inputs(batch, frames, seed=0):
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(-1, 1, (batch, frames, 17, 2)).astype(np.float32)
    pose = (0.3 * rng.normal(size=(batch, frames, 17, 3))).astype(np.float32)
    pose -= pose[..., :1, :]
    return keypoints, pose


def test_denoiser_shapes_root_and_determinism():
    torch.manual_seed(0)
    model = PoseDenoiser(DenoiserConfig(window=9, depth=2, width=16, heads=2)).eval()
    noisy = torch.randn(3, 9, 17, 3)
    keypoints = torch.randn(3, 9, 17, 2)
    t = torch.tensor([1, 25, 50])
    out = model(noisy, keypoints, t)
    assert out.shape == (3, 9, 17, 3)
    assert torch.all(out[:, :, 0] == 0)
    assert torch.equal(out, model(noisy, keypoints, t))
    # the step matters (the timestep module is wired in once FiLM weights are non-zero)
    for block in model.blocks:
        torch.nn.init.normal_(block.step.film.weight, std=0.5)
    assert not torch.allclose(model(noisy, keypoints, t), model(noisy, keypoints, t.flip(0)))
    with pytest.raises(ValueError, match="windows of 9 frames"):
        model(torch.randn(1, 8, 17, 3), torch.randn(1, 8, 17, 2), torch.tensor([1]))


def test_depth_and_width_are_configurable_and_trainable():
    for depth, width in [(1, 16), (3, 32)]:
        model = PoseDenoiser(DenoiserConfig(window=5, depth=depth, width=width, heads=2))
        assert len(model.blocks) == depth and model.embed.out_features == width
        out = model(torch.randn(2, 5, 17, 3), torch.randn(2, 5, 17, 2), torch.tensor([3, 4]))
        out.pow(2).mean().backward()
        assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="unknown denoiser settings"):
        DenoiserConfig.from_dict({"depth": 2, "wdith": 3})


def test_reprojection_residual_finds_the_joint_off_its_keypoint():
    """Keypoints that are a weak-perspective image of the pose give no residual, whatever the
    camera's scale and shift; a joint moved in the image shows at that joint, in metres."""
    rng = np.random.default_rng(0)
    pose = torch.as_tensor(0.3 * rng.normal(size=(4, 17, 3)))
    scale = torch.tensor([0.2, 0.5, 1.0, 3.0])[:, None, None]
    shift = torch.as_tensor(rng.normal(size=(4, 1, 2)))
    keypoints = scale * pose[..., :2] + shift
    residual = reprojection_residual(pose, keypoints)
    assert residual.shape == (4, 17, 2)
    assert torch.allclose(residual, torch.zeros_like(residual), atol=1e-9)
    # the depth does not enter: a weak-perspective camera cannot see it
    deeper = pose.clone()
    deeper[..., 2] += 1.0
    assert torch.allclose(reprojection_residual(deeper, keypoints), residual, atol=1e-9)
    # 5 cm off in the image at joint 13: the residual is largest there and about 5 cm
    moved = keypoints.clone()
    moved[:, 13, 0] += 0.05 * scale[:, 0, 0]
    residual = reprojection_residual(pose, moved)
    norms = residual.norm(dim=-1)
    assert torch.all(norms.argmax(dim=-1) == 13)
    assert torch.all((norms[:, 13] > 0.04) & (norms[:, 13] < 0.06))
    # a collapsed pose (all joints at the root) has no scale: finite, never NaN
    flat = reprojection_residual(torch.zeros(1, 17, 3), keypoints[:1])
    assert torch.isfinite(flat).all()


def test_reprojection_inputs_add_two_features_per_joint():
    torch.manual_seed(0)
    plain = PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, bone_inputs=True))
    wider = PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, bone_inputs=True,
                                        reprojection_inputs=True))
    assert wider.embed.in_features == plain.embed.in_features + 2 == 10
    noisy, keypoints = torch.randn(2, 5, 17, 3), torch.randn(2, 5, 17, 2)
    out = wider(noisy, keypoints, torch.tensor([3, 4]))
    assert out.shape == (2, 5, 17, 3) and torch.isfinite(out).all()


def _rotating_skeleton(frames=27, seed=0):
    """(frames, 17, 3) a random skeleton turning about a tilted axis: rigid, bones of fixed
    length, every bone's direction changing."""
    rng = np.random.default_rng(seed)
    rest = np.zeros((17, 3))
    for joint, parent in enumerate(H36M17_PARENTS):
        if parent >= 0:
            rest[joint] = rest[parent] + rng.normal(size=3) * 0.15
    axis = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
    poses = []
    for angle in np.linspace(0, 1.5, frames):
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        rotation = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        poses.append(rest @ rotation.T)
    return np.stack(poses)


def test_bone_length_change_is_zero_on_a_rigid_skeleton_and_shows_an_offset_joint():
    """A rigid skeleton, however it moves, has no bone-length change; a joint with a constant
    30 mm offset (in the camera's axes, as the do-no-harm case) on a turning limb shows at that
    joint only; i.i.d. noise shows everywhere."""
    parents = torch.tensor([max(p, 0) for p in H36M17_PARENTS])
    rigid = torch.as_tensor(_rotating_skeleton())
    change = bone_length_change(rigid, parents)
    assert change.shape == (27, 17, 2)
    assert change.abs().max() < 1e-6
    offset = rigid.clone()
    offset[:, 13] += torch.tensor([0.03, 0.0, 0.0], dtype=offset.dtype)   # left wrist
    features = bone_length_change(offset, parents)
    change = features[..., 0].abs().amax(dim=0)
    assert change[13] > 1 and change[13] == change.max()   # over 2 mm
    assert torch.all(change[[j for j in range(17) if j != 13]] < 1e-6)
    # the second feature: the RMS of the first over the window, in every frame
    rms = features[..., 0].square().mean(dim=0).sqrt()
    assert torch.allclose(features[..., 1], rms.expand(27, 17))
    noisy = rigid + 0.01 * torch.randn(rigid.shape, dtype=rigid.dtype,
                                       generator=torch.Generator().manual_seed(0))
    change = bone_length_change(noisy, parents)[..., 0].abs().amax(dim=0)
    assert change[0] < 1e-9 and torch.all(change[1:] > 1)   # the root has no bone
    # batched windows: the mean is over each window's frames, not across windows
    both = torch.stack([rigid, offset])
    assert bone_length_change(both, parents)[0].abs().max() < 1e-6


def test_bone_length_inputs_add_two_features_and_need_a_window():
    plain = PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, bone_inputs=True,
                                        reprojection_inputs=True))
    wider = PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, bone_inputs=True,
                                        reprojection_inputs=True, bone_length_inputs=True))
    assert wider.embed.in_features == plain.embed.in_features + 2 == 12
    out = wider(torch.randn(2, 5, 17, 3), torch.randn(2, 5, 17, 2), torch.tensor([3, 4]))
    assert out.shape == (2, 5, 17, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="causal"):
        PoseDenoiser(DenoiserConfig(window=5, depth=1, width=16, bone_length_inputs=True,
                                    causal=True))


def test_output_gate_starts_at_one_and_can_switch_the_correction_off():
    torch.manual_seed(0)
    config = DenoiserConfig(window=5, depth=1, width=16, bone_inputs=True)
    plain = PoseDenoiser(config)
    gated = PoseDenoiser(DenoiserConfig(**{**config.to_dict(), "output_gate": True}))
    state = plain.state_dict()
    gated.load_state_dict({**gated.state_dict(), **state})
    noisy, keypoints, t = torch.randn(2, 5, 17, 3), torch.randn(2, 5, 17, 2), torch.tensor([3, 4])
    with torch.no_grad():
        assert torch.equal(gated(noisy, keypoints, t), plain(noisy, keypoints, t))
        gated.gate.bias.fill_(-40.0)        # the gate closed: no correction at all
        assert gated(noisy, keypoints, t).abs().max() < 1e-12
        gated.gate.bias.fill_(40.0)         # wide open: twice the head's correction
        assert torch.allclose(gated(noisy, keypoints, t), 2 * plain(noisy, keypoints, t))


def test_flops_grow_with_depth_and_count_attention(capsys):
    rows = [flops.count_flops(DenoiserConfig(window=27, depth=d, width=32, heads=2))
            for d in (1, 2, 3)]
    per_block = rows[1]["flops_per_call"] - rows[0]["flops_per_call"]
    assert per_block > 0
    assert rows[2]["flops_per_call"] - rows[1]["flops_per_call"] == per_block
    # per block: 2 STC modules (qkv + proj: 4 d^2 MACs per token each), an MLP (2 * 2 d^2),
    # FiLM (2 d^2 per window) and attention over joints and frames (each on d/2 channels)
    d, tokens, frames, joints = 32, 27 * 17, 27, 17
    linear = 2 * (2 * 4 * d * d + 2 * 2 * d * d) * tokens + 2 * 2 * d * d
    attention = 2 * 2 * 2 * (frames * joints * joints + joints * frames * frames) * (d // 2)
    assert per_block == linear + attention
    parser = argparse.ArgumentParser()
    flops.add_arguments(parser)
    assert flops.main(parser.parse_args(["--depth", "1", "3", "--width", "32"])) == 0
    out = capsys.readouterr().out
    assert f"{rows[0]['flops_per_call'] / 1e6:.2f}" in out
    assert f"{2 * rows[2]['flops_per_call'] / 1e6:.2f}" in out  # K = 2 steps


def test_save_load_roundtrip_gives_identical_output(tmp_path):
    refiner = small_refiner()
    refiner.save(tmp_path / "m")
    loaded = D3PRefiner.load(tmp_path / "m")
    assert loaded.window == 9 and loaded.steps == 2
    np.testing.assert_allclose(loaded.joint_uncertainty, np.linspace(0, 0.05, 17), rtol=1e-6)
    keypoints, pose = inputs(4, 9)
    out = refiner.refine_windows(keypoints, pose)
    assert out.dtype == np.float32 and out.shape == pose.shape
    np.testing.assert_array_equal(out, loaded.refine_windows(keypoints, pose))
    np.testing.assert_array_equal(out, loaded.refine_windows(keypoints, pose))
    assert np.all(out[..., 0, :] == 0)
    # steps=1 is a different (valid) inference
    assert not np.array_equal(out, loaded.refine_windows(keypoints, pose, steps=1))
    assert isinstance(loaded.device, torch.device)


def test_refine_sequence_matches_manual_windows():
    refiner = small_refiner()
    keypoints, pose = inputs(1, 40)
    keypoints, pose = keypoints[0], pose[0]
    for stride in (9, 4, 1):
        starts = window_starts(40, 9, stride)
        manual = stitch_windows(
            refiner.refine_windows(extract_windows(keypoints, starts, 9),
                                   extract_windows(pose, starts, 9)), starts, 40)
        got = refiner.refine_sequence(keypoints, pose, stride=stride, batch_size=3)
        np.testing.assert_allclose(got, manual, atol=1e-6)
    short = refiner.refine_sequence(keypoints[:5], pose[:5])      # edge-padded
    assert short.shape == (5, 17, 3)


def test_bad_inputs_raise_clear_errors():
    refiner = small_refiner()
    keypoints, pose = inputs(2, 9)
    with pytest.raises(ValueError, match=r"keypoints_2d must be \(B, 9, 17, 2\)"):
        refiner.refine_windows(keypoints[:, :8], pose[:, :8])
    with pytest.raises(ValueError, match="pose_3d must be"):
        refiner.refine_windows(keypoints, pose[:1])
    pose_nan = pose.copy()
    pose_nan[0, 0, 3, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        refiner.refine_windows(keypoints, pose_nan)
    with pytest.raises(ValueError, match="stride"):
        refiner.refine_sequence(keypoints[0], pose[0], stride=10)
    with pytest.raises(ValueError, match="pose_3d must be"):
        refiner.refine_sequence(keypoints[0], pose[0, :5])


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(D3PModelError, match="does not exist"):
        D3PRefiner.load(tmp_path / "nothing")
    model_dir = tmp_path / "m"
    small_refiner().save(model_dir)
    (model_dir / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(D3PModelError, match="weights.pt"):
        D3PRefiner.load(model_dir)
    small_refiner().save(model_dir)
    spec = json.loads((model_dir / "model.json").read_text())
    spec["denoiser"]["width"] = 32
    (model_dir / "model.json").write_text(json.dumps(spec))
    with pytest.raises(D3PModelError, match="do not match"):
        D3PRefiner.load(model_dir)
    (model_dir / "model.json").write_text("{not json")
    with pytest.raises(D3PModelError, match="model.json"):
        D3PRefiner.load(model_dir)
    small_refiner().save(model_dir)
    (model_dir / "cnd.pt").unlink()
    with pytest.raises(D3PModelError, match="cnd.pt"):
        D3PRefiner.load(model_dir)
    assert issubclass(D3PModelError, ValueError)


def test_shipped_default_model_loads_and_refines():
    refiner = D3PRefiner.load(default_model_dir())
    assert refiner.steps >= 1 and refiner.window >= 1
    uncertainty = refiner.joint_uncertainty
    assert uncertainty.shape == (17,) and uncertainty[0] == 0 and np.all(uncertainty[1:] > 0)
    keypoints, pose = inputs(2, refiner.window)
    out = refiner.refine_windows(keypoints, pose)
    assert out.shape == pose.shape and np.all(np.isfinite(out))


def test_without_diffusion_uses_one_step():
    refiner = small_refiner(diffusion=False, steps=2)
    assert refiner.steps == 1
    keypoints, pose = inputs(2, 9)
    np.testing.assert_array_equal(refiner.refine_windows(keypoints, pose),
                                  refiner.refine_windows(keypoints, pose, steps=5))
