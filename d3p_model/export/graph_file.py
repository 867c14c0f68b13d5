"""What an exported refinement graph is called and carries (input names, metadata keys, the
digest of the weights it bakes in): plain names and file hashing, without torch, so ONNX
Runtime (runtime.py) opens and checks a graph that torch (onnx.py) wrote."""

from __future__ import annotations

import hashlib
import pathlib

from ..model_files import CND_FILE, WEIGHTS_FILE

INPUTS = ("keypoints_2d", "pose_3d")
OUTPUT = "refined"
# a causal model's graph refines one new frame per person from its cached history
# (d3p_model/denoiser/streaming.py): two more inputs, and the updated history as outputs
STREAM_INPUTS = INPUTS + ("history", "history_offset")
STREAM_OUTPUTS = (OUTPUT, "history_new")
# the stream graph's interface version: a graph exported from the same weights by older code
# (another history layout) is stale too
META_STREAM = "d3p.stream_graph"
STREAM_GRAPH_VERSION = "2"
META_SPEC = "d3p.model_json"        # the model.json of the exported model
META_STEPS = "d3p.steps"
META_SOURCE = "d3p.source_sha256"   # of the model directory's weights + CND files


def onnx_file_name(steps: int) -> str:
    """Name of the K-step graph inside a model directory."""
    return f"refiner_k{int(steps)}.onnx"


def is_current(metadata: dict, source: str, causal: bool) -> bool:
    """Whether a graph with this metadata was exported from these weights (`source_digest`),
    and, for a causal model, with the current stream interface."""
    return metadata.get(META_SOURCE) == source and (
        not causal or metadata.get(META_STREAM) == STREAM_GRAPH_VERSION)


def source_digest(model_dir) -> str:
    """sha256 of a model directory's weights and CND statistics: what a graph bakes in, so a
    runtime can tell a stale .onnx from a current one."""
    digest = hashlib.sha256()
    for name in (WEIGHTS_FILE, CND_FILE):
        digest.update((pathlib.Path(model_dir) / name).read_bytes())
    return digest.hexdigest()
