"""The fast STC attention gives the numbers of the plain attention it replaced.

`reference_forward` below is the STC attention written out plainly (explicit matmul and
softmax per half and head, the layout of the trained qkv weights). Every shipped refiner must
give the same refined poses with it as with the code in d3p_model/nn/stc.py,
gradients must agree, and the ONNX export (legacy exporter, dynamic batch) must match torch.
"""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from d3p_model.diffusion.process import ddim_refine
from d3p_model.nn import STCAttention, STCBlock
from d3p_model.refiner import D3PRefiner, default_model_dir

torch.set_num_threads(1)

MODELS = Path(__file__).resolve().parent.parent / "d3p_model" / "models"
REFINERS = sorted(p.parent for p in MODELS.glob("refiner/*/model/weights.pt"))
# the reference below is the windowed (both-ways) attention; a causal model's own attention
# is checked against its stream in tests/test_streaming_model.py
WINDOWED = [p for p in REFINERS
            if not json.loads((p / "model.json").read_text())["denoiser"].get("causal")]
TOLERANCE = 1e-5


def reference_forward(self, x):
    """STC attention as first written: q, k, v = chunks of qkv; channels [spatial | temporal]."""
    b, t, j, c = x.shape
    half, h = c // 2, self.heads
    d = half // h
    q, k, v = self.qkv(x).chunk(3, dim=-1)

    def attend(q, k, v):  # (N, L, half) -> (N, L, half), h heads of d channels
        n, length, _ = q.shape
        q, k, v = (z.reshape(n, length, h, d).transpose(1, 2) for z in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (weights @ v).transpose(1, 2).reshape(n, length, half)

    spatial = attend(*(z[..., :half].reshape(b * t, j, half) for z in (q, k, v)))
    temporal = attend(*(z[..., half:].transpose(1, 2).reshape(b * j, t, half)
                        for z in (q, k, v)))
    temporal = temporal.reshape(b, j, t, half).transpose(1, 2)
    return self.proj(torch.cat([spatial.reshape(b, t, j, half), temporal], dim=-1))


def random_windows(batch, window, seed=0):
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(-1, 1, (batch, window, 17, 2)).astype(np.float32)
    pose = (0.25 * rng.normal(size=(batch, window, 17, 3))).astype(np.float32)
    return keypoints, pose - pose[..., :1, :]


def test_shipped_models_are_found():
    assert default_model_dir() in REFINERS and len(REFINERS) >= 5


@pytest.mark.parametrize("model_dir", WINDOWED, ids=lambda p: p.parent.name)
def test_shipped_refiner_refines_as_with_the_reference_attention(model_dir, monkeypatch):
    refiner = D3PRefiner.load(model_dir)   # strict load: the state_dict did not change
    keypoints, pose = random_windows(3, refiner.window)
    fast = refiner.refine_windows(keypoints, pose)
    with monkeypatch.context() as patch:
        patch.setattr(STCAttention, "forward", reference_forward)
        reference = refiner.refine_windows(keypoints, pose)
    assert np.isfinite(fast).all()
    assert np.abs(fast - reference).max() < TOLERANCE
    # the refinement moved the poses: a comparison of two no-ops would prove nothing
    assert np.abs(reference - pose).max() > 1e-3


def test_state_dict_is_the_trained_parameters_only():
    attention = STCAttention(32, heads=2)
    assert sorted(attention.state_dict()) == ["proj.bias", "proj.weight", "qkv.bias",
                                              "qkv.weight"]


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_gradients_match_the_reference(heads, monkeypatch):
    torch.manual_seed(heads)
    block = STCBlock(16, heads=heads)
    x = torch.randn(2, 9, 17, 16)

    def output_and_grads():
        block.zero_grad()
        inputs = x.clone().requires_grad_(True)
        out = block(inputs)
        (out * torch.linspace(-1, 1, 16)).square().sum().backward()
        return out.detach(), [inputs.grad] + [p.grad.clone() for p in block.parameters()]

    fast_out, fast_grads = output_and_grads()
    with monkeypatch.context() as patch:
        patch.setattr(STCAttention, "forward", reference_forward)
        ref_out, ref_grads = output_and_grads()
    assert (fast_out - ref_out).abs().max() < TOLERANCE
    for fast, ref in zip(fast_grads, ref_grads):
        assert torch.allclose(fast, ref, rtol=1e-4, atol=1e-5)


def test_deterministic():
    torch.manual_seed(0)
    block = STCBlock(32, heads=2).eval()
    x = torch.randn(3, 27, 17, 32)
    with torch.no_grad():
        assert torch.equal(block(x), block(x))


def test_onnx_export_with_dynamic_batch_matches_torch():
    ort = pytest.importorskip("onnxruntime")
    refiner = D3PRefiner.load(default_model_dir())
    denoiser = refiner.denoiser.eval()
    window = refiner.window
    keypoints, pose = random_windows(4, window, seed=1)
    steps = torch.tensor([50, 25], dtype=torch.long)
    buffer = io.BytesIO()
    batch_axis = {0: "batch"}
    torch.onnx.export(denoiser, (torch.from_numpy(pose[:2]), torch.from_numpy(keypoints[:2]),
                                 steps), buffer, dynamo=False, opset_version=18,
                      input_names=["noisy_pose", "keypoints_2d", "t"], output_names=["error"],
                      dynamic_axes={"noisy_pose": batch_axis, "keypoints_2d": batch_axis,
                                    "t": batch_axis, "error": batch_axis})
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    # the lean export schedule: per STC module 7 Gemm (q, k, v of both halves and proj),
    # 4 Transpose (k^T per half, which ONNX Runtime fuses into its MatMul; into and out of
    # the temporal order), none per head, no Slice; the generic one had 3x the nodes
    onnx = pytest.importorskip("onnx")
    ops = [node.op_type for node in onnx.load_from_string(buffer.getvalue()).graph.node]
    modules = 2 * denoiser.config.depth
    assert ops.count("Transpose") == 4 * modules and ops.count("Slice") == 0
    assert ops.count("Gemm") >= 7 * modules

    def onnx_error(noisy, t):
        (out,) = session.run(None, {"noisy_pose": noisy.numpy(), "t": t.numpy(),
                                    "keypoints_2d": keypoints[:len(noisy)]})
        return torch.from_numpy(out)

    for batch in (1, 4):
        noisy = torch.from_numpy(pose[:batch])
        t = torch.full((batch,), 37, dtype=torch.long)
        with torch.no_grad():
            expected = denoiser(noisy, torch.from_numpy(keypoints[:batch]), t)
        assert (onnx_error(noisy, t) - expected).abs().max().item() < TOLERANCE

    # a whole K=2 refinement with ONNX Runtime as the denoiser: same poses, in metres
    with torch.no_grad():
        refined_onnx = ddim_refine(torch.from_numpy(pose),
                                   lambda y, t: onnx_error(y, t) * refiner.error_scale,
                                   refiner.alpha_bar, refiner.steps)
    refined_torch = refiner.refine_windows(keypoints, pose)
    refined_onnx = (refined_onnx - refined_onnx[..., :1, :]).numpy()
    assert np.abs(refined_onnx - refined_torch).max() < TOLERANCE
