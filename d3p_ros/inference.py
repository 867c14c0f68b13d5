"""Inference backends for the node: one interface, chosen by the `backend` parameter.

A backend takes a batch of windows (B, T, 17, 2) normalised 2D + (B, T, 17, 3) root-relative
3D and returns the refined (B, T, 17, 3). `torch` runs `D3PRefiner` (cpu or cuda, optional
fp16); `onnx` runs the exported K-step graph in ONNX Runtime (`OnnxRefiner`: CPU, or CUDA /
TensorRT when this onnxruntime has them). A new backend is a class with the same attributes
added to `BACKENDS`; the node needs nothing else.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from d3p_model.skeleton import NUM_JOINTS

_log = logging.getLogger(__name__)


class MissingDependency(RuntimeError):
    """A Python package a backend needs is not installed; the text says how to get it."""


def missing_onnx_message(module: str) -> str:
    # rosdep/colcon installs neither onnxruntime nor onnx: say exactly what to do instead
    if module.split(".")[0] == "onnx":
        return ("backend 'onnx' has to export this model to ONNX first, which needs the onnx "
                "package: `pip install onnx` (or `d3p export --model DIR` on a machine that has "
                "it), or run with backend:=torch")
    return (f"backend 'onnx' needs ONNX Runtime (Python module {module!r} is not installed): "
            "`pip install onnxruntime` (CPU) or `pip install onnxruntime-gpu` (CUDA), in a "
            "ROS workspace the rosdep key python3-onnxruntime-pip (or "
            "python3-onnxruntime-gpu-pip); or run the PyTorch backend instead: backend:=torch")


def refine_isolated(backend, keypoints_2d: np.ndarray, pose_3d: np.ndarray) -> list:
    """Refine a batch of windows in one call; should the backend reject the batch, refine
    each window alone, so that one person's bad window costs only that person.
    Returns, per window, the refined (T, 17, 3) or the exception that window raised."""
    try:
        return list(backend.refine(keypoints_2d, pose_3d))
    except Exception as batch_error:  # noqa: BLE001 - which window caused it is found below
        if len(keypoints_2d) == 1:
            return [batch_error]
    results = []
    for kp, pose in zip(keypoints_2d, pose_3d):
        try:
            results.append(backend.refine(kp[None], pose[None])[0])
        except Exception as err:  # noqa: BLE001 - reported per window by the caller
            results.append(err)
    return results


class RefinerBackend:
    """What the node relies on. Subclasses set the attributes in `__init__`."""

    name: str               # backend name as given in the parameter
    device: str             # where it actually runs, after any fallback ("cpu", "cuda:0")
    precision: str          # "fp32" or "fp16"
    window: int             # T frames per window
    steps: int              # DDIM steps used
    stride: int             # frames between windows the model was validated with (model.json)
    correction_threshold: float   # metres, soft threshold on each joint's correction (model.json)
    joint_uncertainty: np.ndarray | None    # (17,) metres, None when the model has none
    model_dir: Path
    causal: bool = False    # a causal model: stream_step refines one new frame per person
    history_shape: tuple = ()   # causal models: the per-person history stream_step carries

    def refine(self, keypoints_2d: np.ndarray, pose_3d: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def stream_step(self, keypoints_2d, pose_3d, history, history_offset):
        """Causal models: (B, 17, 2) + (B, 17, 3) new frames, their histories and slot
        offsets -> refined (B, 17, 3), the new frames' keys/values (d3p_model/causal_stream.py)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (and accelerator memory)."""


class TorchBackend(RefinerBackend):
    def __init__(self, model_dir, device: str = "cpu", fp16: bool = False, steps: int = 0,
                 num_threads: int = 0, warn=_log.warning):
        import torch
        from d3p_model.refiner import D3PRefiner

        self.name = "torch"
        if num_threads > 0:
            torch.set_num_threads(int(num_threads))
        if device.startswith("cuda") and not torch.cuda.is_available():
            warn(f"device {device!r} requested but CUDA is not available: running on the CPU")
            device = "cpu"
        elif not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"torch backend: device must be 'cpu' or 'cuda[:N]', got {device!r}")
        dtype = torch.float32
        if fp16 and device == "cpu":
            warn("fp16 is only used on CUDA; running fp32 on the CPU")
        elif fp16:
            dtype = torch.float16
        self.model_dir = Path(model_dir)
        self._torch = torch
        self._refiner = D3PRefiner.load(self.model_dir, device=device, dtype=dtype)
        self.device = str(self._refiner.device)
        self.precision = "fp16" if dtype == torch.float16 else "fp32"
        self.window = int(self._refiner.window)
        if steps < 0:
            raise ValueError(f"steps must be >= 0 (0 = the model's default), got {steps}")
        self.steps = int(steps) if steps > 0 else int(self._refiner.steps)
        self.stride = int(self._refiner.stride)
        self.correction_threshold = float(self._refiner.correction_threshold)
        uncertainty = np.asarray(self._refiner.joint_uncertainty, dtype=np.float32)
        self.joint_uncertainty = (uncertainty if uncertainty.shape == (NUM_JOINTS,)
                                  and np.all(np.isfinite(uncertainty)) else None)
        self.causal = self._refiner.causal
        if self.causal:
            self.history_shape = self._refiner.history_shape(self.steps)

    def refine(self, keypoints_2d: np.ndarray, pose_3d: np.ndarray) -> np.ndarray:
        return self._refiner.refine_windows(keypoints_2d, pose_3d, steps=self.steps)

    def stream_step(self, keypoints_2d, pose_3d, history, history_offset):
        return self._refiner.stream_step(keypoints_2d, pose_3d, history, history_offset,
                                         self.steps)

    def close(self) -> None:
        device = self.device
        self._refiner = None
        if device.startswith("cuda"):
            self._torch.cuda.empty_cache()


class OnnxBackend(RefinerBackend):
    """The model directory's `refiner_k{K}.onnx` (exported into the cache when missing or
    stale) in ONNX Runtime; `num_threads` sets its intra-op threads."""

    def __init__(self, model_dir, device: str = "cpu", fp16: bool = False, steps: int = 0,
                 num_threads: int = 0, warn=_log.warning):
        from d3p_model.export.runtime import OnnxRefiner

        if steps < 0:
            raise ValueError(f"steps must be >= 0 (0 = the model's default), got {steps}")
        self.name = "onnx"
        self.model_dir = Path(model_dir)
        try:
            self._refiner = OnnxRefiner.load(self.model_dir, steps=steps or None, device=device,
                                             num_threads=num_threads, fp16=fp16, warn=warn)
        except ModuleNotFoundError as err:
            raise MissingDependency(missing_onnx_message(err.name or str(err))) from err
        self.device = self._refiner.device
        self.precision = self._refiner.precision
        self.window = self._refiner.window
        self.steps = self._refiner.steps
        self.stride = int(self._refiner.stride)
        self.correction_threshold = float(self._refiner.correction_threshold)
        uncertainty = self._refiner.joint_uncertainty
        self.joint_uncertainty = (uncertainty if uncertainty.shape == (NUM_JOINTS,)
                                  and np.all(np.isfinite(uncertainty)) else None)
        self.causal = self._refiner.causal
        self.history_shape = self._refiner.history_shape()

    def refine(self, keypoints_2d: np.ndarray, pose_3d: np.ndarray) -> np.ndarray:
        return self._refiner.refine_windows(keypoints_2d, pose_3d)

    def stream_step(self, keypoints_2d, pose_3d, history, history_offset):
        return self._refiner.stream_step(keypoints_2d, pose_3d, history, history_offset)

    def close(self) -> None:
        self._refiner = None   # the session frees its (accelerator) memory with it


BACKENDS = {"torch": TorchBackend, "onnx": OnnxBackend}


def create_backend(name: str, model_dir, device: str = "cpu", fp16: bool = False,
                   steps: int = 0, num_threads: int = 0, warn=_log.warning) -> RefinerBackend:
    """Load the model through the named backend. A missing/corrupt model raises
    `d3p_model.refiner.D3PModelError` naming the file; an unknown backend a ValueError."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](model_dir, device=device, fp16=fp16, steps=steps,
                          num_threads=num_threads, warn=warn)
