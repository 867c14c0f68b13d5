"""Export a D3PRefiner's whole K-step DDIM refinement as one ONNX graph.

The graph takes `keypoints_2d` (B, T, 17, 2) and `pose_3d` (B, T, 17, 3), float32, batch
dynamic, and returns `refined` (B, T, 17, 3), root-relative: exactly `D3PRefiner.refine_tensor`
with K fixed (the DDIM loop is unrolled, so K is part of the file: one file per K). A causal
model's graph is its stream step instead: one new frame per person and its cached history
in, the refined frame and that frame's keys and values out (denoiser/streaming.py); ONNX
Runtime streams whole windows and sequences through it (runtime.py). The model's spec (model.json) and a hash of the weights it was exported from are stored as
metadata, so a .onnx file is a complete model on its own and a stale one can be recognised.

Exported with the TorchScript-based exporter (`dynamo=False`): it needs no package beyond
`onnx`, and the unrolled graph of this model has no data-dependent control flow for which
the newer exporter would be needed.
"""

from __future__ import annotations

import json
import pathlib
import warnings

import torch
from torch import nn

from ..skeleton import NUM_JOINTS
# the graph's names and metadata keys live without torch (graph_file.py), for the runtime
from .graph_file import (INPUTS, META_SOURCE, META_SPEC, META_STEPS, META_STREAM,  # noqa: F401
                         OUTPUT, STREAM_GRAPH_VERSION, STREAM_INPUTS, STREAM_OUTPUTS,
                         onnx_file_name, source_digest)

OPSET = 18


class RefinementGraph(nn.Module):
    """The refinement with K fixed, as a module the exporter can trace."""

    def __init__(self, refiner, steps: int):
        super().__init__()
        self.refiner = refiner
        self.denoiser = refiner.denoiser   # registered, so the weights become initializers
        self.steps = int(steps)

    def forward(self, keypoints_2d: torch.Tensor, pose_3d: torch.Tensor) -> torch.Tensor:
        return self.refiner.refine_tensor(keypoints_2d, pose_3d, self.steps)


def export_onnx(refiner, path, steps: int | None = None, opset: int = OPSET,
                source: str | None = None) -> pathlib.Path:
    """Write the K-step refinement (default K: the model's) to `path`; returns the path.
    `source`: the `source_digest` of the directory the refiner was loaded from, if any."""
    import onnx

    from ..refiner import D3PRefiner

    steps = refiner.steps if (steps is None or not refiner.diffusion) else int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if refiner.device.type != "cpu" or refiner.dtype != torch.float32:
        # trace a float32 CPU copy: the graph is device-neutral, providers pick the device
        refiner = D3PRefiner(refiner.denoiser.to("cpu", torch.float32), refiner.cnd,
                             steps=refiner.steps, diffusion=refiner.diffusion,
                             timesteps=refiner.timesteps, offset=refiner.offset,
                             joint_uncertainty=refiner.joint_uncertainty, info=refiner.info,
                             stride=refiner.stride,
                             correction_threshold=refiner.correction_threshold)
    refiner.denoiser.eval()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    if refiner.causal:
        # one frame per person plus its history: the stream step (denoiser/streaming.py)
        graph = refiner.stream_module(steps)
        example = (torch.randn(2, NUM_JOINTS, 2, generator=generator),
                   0.2 * torch.randn(2, NUM_JOINTS, 3, generator=generator),
                   0.1 * torch.randn(2, *refiner.history_shape(steps),
                                     generator=generator),
                   torch.arange(1, refiner.window).flip(0).repeat(2, 1))
        inputs, outputs = STREAM_INPUTS, STREAM_OUTPUTS
    else:
        graph = RefinementGraph(refiner, steps)
        example = (torch.randn(2, refiner.window, NUM_JOINTS, 2, generator=generator),
                   0.2 * torch.randn(2, refiner.window, NUM_JOINTS, 3, generator=generator))
        inputs, outputs = INPUTS, (OUTPUT,)
    batch = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        # the shape checks in forward() become constants (the window is fixed by design), and
        # the exporter announces its own deprecation: neither is news to the user
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(graph, example, str(path), dynamo=False,
                          input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes={name: batch for name in inputs + outputs},
                          opset_version=opset, do_constant_folding=True)
    model = onnx.load(str(path))
    spec = refiner.spec()
    spec["steps"] = steps
    metadata = {META_SPEC: json.dumps(spec, allow_nan=False), META_STEPS: str(steps)}
    if source:
        metadata[META_SOURCE] = source
    if refiner.causal:
        metadata[META_STREAM] = STREAM_GRAPH_VERSION
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "d3p"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def export_model_dir(model_dir, steps: int | None = None, path=None) -> pathlib.Path:
    """Export the model in `model_dir` (default file: `model_dir/refiner_k{K}.onnx`)."""
    from ..refiner import D3PRefiner

    refiner = D3PRefiner.load(model_dir)
    steps = refiner.steps if (steps is None or not refiner.diffusion) else int(steps)
    path = pathlib.Path(model_dir) / onnx_file_name(steps) if path is None else path
    return export_onnx(refiner, path, steps, source=source_digest(model_dir))
