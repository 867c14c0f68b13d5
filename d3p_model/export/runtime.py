"""OnnxRefiner: the exported K-step refinement run by ONNX Runtime, a drop-in for D3PRefiner's
`refine_windows` / `refine_sequence` (same inputs, same checks, same outputs within 0.1 mm).

Needs numpy and onnxruntime only, unless the graph has to be exported first (then torch):
  OnnxRefiner.load(model_dir)          model_dir/refiner_k{K}.onnx; missing or exported from
                                       other weights -> exported into the cache, with a warning
  OnnxRefiner.load(onnx_file=F)        a .onnx file on its own (its metadata holds model.json)
Providers: device "cpu" -> CPU; "cuda[:N]" -> TensorRT (engine cached) and CUDA when this
onnxruntime has them, else the CPU with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib

import numpy as np

from ..data.windows import BATCH_SIZE, check_windows, refine_in_windows
from ..model_files import D3PModelError, read_model_spec
from ..skeleton import NUM_JOINTS
from ..trust import threshold_from_spec
from .graph_file import (INPUTS, META_SPEC, META_STEPS, STREAM_INPUTS, is_current,
                         onnx_file_name, source_digest)

_log = logging.getLogger(__name__)

CPU_BATCH_SIZE = 16


def default_steps(spec: dict) -> int:
    return int(spec["steps"]) if spec.get("diffusion", {}).get("enabled", True) else 1


def providers_for(device: str, fp16: bool, cache: pathlib.Path | None, warn) -> tuple[list, str]:
    """ONNX Runtime providers for a device string, and the precision they will run."""
    import onnxruntime as ort

    if device == "cpu":
        if fp16:
            warn("fp16 is only used with the TensorRT provider; running fp32 on the CPU")
        return ["CPUExecutionProvider"], "fp32"
    if not device.startswith("cuda"):
        raise ValueError(f"onnx backend: device must be 'cpu' or 'cuda[:N]', got {device!r}")
    device_id = int(device.split(":", 1)[1]) if ":" in device else 0
    available = set(ort.get_available_providers())
    providers, precision = [], "fp32"
    if "TensorrtExecutionProvider" in available:
        options = {"device_id": device_id, "trt_fp16_enable": bool(fp16)}
        if cache is not None:   # building an engine takes minutes: do it once per model
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache))
        providers.append(("TensorrtExecutionProvider", options))
        precision = "fp16" if fp16 else "fp32"
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"device_id": device_id}))
    if not providers:
        warn(f"device {device!r} requested but this onnxruntime has no CUDA provider "
             f"(install onnxruntime-gpu): running on the CPU")
        return ["CPUExecutionProvider"], "fp32"
    if fp16 and precision == "fp32":
        warn("fp16 needs the TensorRT provider; running fp32 on CUDA")
    return providers + ["CPUExecutionProvider"], precision


def _cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("D3P_CACHE")
                        or pathlib.Path(__file__).resolve().parents[2] / "cache") / "onnx"


def resolve_onnx_file(model_dir: pathlib.Path, steps: int, warn) -> pathlib.Path:
    """model_dir/refiner_k{K}.onnx if it was exported from these weights; else a current
    export in the cache (made now if needed)."""
    source = source_digest(model_dir)
    causal = bool(read_model_spec(model_dir)["denoiser"].get("causal", False))
    shipped = model_dir / onnx_file_name(steps)
    if shipped.is_file():
        if is_current(_metadata(shipped), source, causal):
            return shipped
        warn(f"{shipped} was exported from other weights than {model_dir}'s (or by older "
             f"code): using a fresh export (rerun `d3p export --model {model_dir}` to update "
             f"the file)")
    cached = _cache_root() / source[:16] / onnx_file_name(steps)
    if cached.is_file() and is_current(_metadata(cached), source, causal):
        return cached
    if not shipped.is_file():
        warn(f"{shipped} does not exist: exporting the model to {cached} (once; "
             f"`d3p export --model {model_dir}` puts it in the model directory)")
    from .onnx import export_model_dir
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    export_model_dir(model_dir, steps, tmp)
    os.replace(tmp, cached)   # atomic: a parallel loader never sees half a file
    return cached


def _metadata(path: pathlib.Path) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise D3PModelError(f"{path}: not a readable ONNX model ({err})") from err
    return dict(session.get_modelmeta().custom_metadata_map)


class OnnxRefiner:
    def __init__(self, onnx_file, device: str = "cpu", num_threads: int = 0, fp16: bool = False,
                 warn=_log.warning):
        import onnxruntime as ort

        self.onnx_file = pathlib.Path(onnx_file)
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = onnxruntime's default), got {num_threads}")
        metadata = _metadata(self.onnx_file)
        try:
            self.spec = json.loads(metadata[META_SPEC])
            self.steps = int(metadata[META_STEPS])
            self.window = int(self.spec["denoiser"]["window"])
            self.causal = bool(self.spec["denoiser"].get("causal", False))
            self.stride = int(self.spec.get("stride", self.window))
            self.correction_threshold = threshold_from_spec(self.spec)
            uncertainty = np.array([np.nan if v is None else float(v)
                                    for v in self.spec["joint_uncertainty"]], dtype=np.float32)
        except (KeyError, TypeError, ValueError) as err:
            raise D3PModelError(f"{self.onnx_file}: not a d3p refiner export (metadata "
                               f"{err!r} missing or bad; export with `d3p export`)") from err
        self.joint_uncertainty = uncertainty
        self.info = dict(self.spec.get("info") or {})
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(num_threads)
        options.inter_op_num_threads = 1
        cache = _cache_root() / "tensorrt"
        providers, self.precision = providers_for(device, fp16, cache, warn)
        if any(isinstance(p, tuple) and p[0] == "TensorrtExecutionProvider" for p in providers):
            cache.mkdir(parents=True, exist_ok=True)
        self.session = ort.InferenceSession(str(self.onnx_file), options, providers=providers)
        self.providers = self.session.get_providers()
        self.device = "cpu" if self.providers[0] == "CPUExecutionProvider" else device
        if self.device == "cpu":
            self.precision = "fp32"
        # windows per call in refine_sequence: on the CPU this graph runs fastest on batches
        # whose activations stay in the cache (T = 27, 1 thread: 3.3 ms per window at 16,
        # 5.4 ms at 256: benchmarks/results/refine_latency_batches.md); accelerators want
        # large batches
        self.default_batch_size = CPU_BATCH_SIZE if self.device == "cpu" else BATCH_SIZE

    @classmethod
    def load(cls, model_dir=None, steps: int | None = None, device: str = "cpu",
             num_threads: int = 0, fp16: bool = False, onnx_file=None,
             warn=_log.warning) -> "OnnxRefiner":
        if onnx_file is None:
            if model_dir is None:
                from ..model_files import default_model_dir
                model_dir = default_model_dir()
            model_dir = pathlib.Path(model_dir)
            spec = read_model_spec(model_dir)
            if steps is not None and int(steps) < 1:
                raise ValueError(f"steps must be >= 1, got {steps}")
            steps = default_steps(spec) if steps is None or not spec.get(
                "diffusion", {}).get("enabled", True) else int(steps)
            onnx_file = resolve_onnx_file(model_dir, steps, warn)
        refiner = cls(onnx_file, device=device, num_threads=num_threads, fp16=fp16, warn=warn)
        if steps is not None and refiner.steps != int(steps):
            raise ValueError(f"{onnx_file} runs {refiner.steps} DDIM steps, not {steps} "
                             f"(export it with `d3p export --steps {steps}`)")
        refiner.model_dir = pathlib.Path(model_dir) if model_dir is not None else None
        if model_dir is not None:
            # the inference stride is a setting of the model directory, not of the graph
            # (as the correction threshold): model.json wins over the export's copy
            model_spec = read_model_spec(pathlib.Path(model_dir))
            refiner.stride = int(model_spec.get("stride", refiner.window))
            refiner.correction_threshold = threshold_from_spec(model_spec)
        return refiner

    def refine_windows(self, keypoints_2d, pose_3d) -> np.ndarray:
        keypoints_2d = np.ascontiguousarray(keypoints_2d, dtype=np.float32)
        pose_3d = np.ascontiguousarray(pose_3d, dtype=np.float32)
        if self.causal:
            return self._stream_windows(keypoints_2d, pose_3d)
        check_windows(keypoints_2d, pose_3d, self.window, NUM_JOINTS)
        (refined,) = self.session.run(None, {INPUTS[0]: keypoints_2d, INPUTS[1]: pose_3d})
        return refined

    def history_shape(self) -> tuple:
        """Per person: what stream_step's history holds (causal_stream.py)."""
        from ..causal_stream import history_shape
        return history_shape(self.spec["denoiser"], self.steps)

    def stream_step(self, keypoints_2d, pose_3d, history, history_offset):
        """A causal model's graph: the new frame of each person, (B, 17, 2) + (B, 17, 3), its
        history and slot offsets -> refined (B, 17, 3), the new frame's keys/values
        (causal_stream.py)."""
        if not self.causal:
            raise ValueError(f"{self.onnx_file} is a windowed model: it has no stream step")
        feeds = {name: np.ascontiguousarray(a, dtype=np.float32)
                 for name, a in zip(STREAM_INPUTS, (keypoints_2d, pose_3d, history))}
        feeds[STREAM_INPUTS[3]] = np.ascontiguousarray(history_offset, dtype=np.int64)
        return tuple(self.session.run(None, feeds))

    def _stream_windows(self, keypoints_2d, pose_3d) -> np.ndarray:
        """Each (any length) window streamed from an empty history, all windows per call:
        what D3PRefiner.refine_windows computes at once for a causal model."""
        frames = keypoints_2d.shape[1] if keypoints_2d.ndim == 4 else self.window
        check_windows(keypoints_2d, pose_3d, frames, NUM_JOINTS)
        from ..causal_stream import advance_history

        batch = len(keypoints_2d)
        history = np.zeros((batch, *self.history_shape()), dtype=np.float32)
        offsets = np.zeros((batch, self.window - 1), dtype=np.int64)
        refined = np.empty_like(pose_3d)
        for frame in range(frames):
            refined[:, frame], new = self.stream_step(keypoints_2d[:, frame], pose_3d[:, frame],
                                                      history, offsets)
            for row in range(batch):
                advance_history(history[row], offsets[row], new[row])
        return refined

    def refine_sequence(self, keypoints_2d, pose_3d, stride=None, batch_size=None,
                        correction_threshold=None) -> np.ndarray:
        """batch_size: windows per call (None: default_batch_size); correction_threshold:
        metres (None: the model's, 0: off). A causal model streams the whole sequence."""
        window = len(keypoints_2d) if self.causal else self.window
        if self.causal:
            stride, batch_size = window, 1
        return refine_in_windows(self.refine_windows, keypoints_2d, pose_3d, window,
                                 NUM_JOINTS, self.stride if stride is None else stride,
                                 batch_size or self.default_batch_size, self.correction_threshold
                                 if correction_threshold is None else correction_threshold)
