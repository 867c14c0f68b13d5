"""D3PRefiner: a trained PoseDenoiser + its CND statistics + calibration, as one object.

A model directory holds
  model.json   format/version, denoiser architecture, diffusion settings, default DDIM
               steps, per-joint uncertainty calibration, provenance (command, git commit)
  weights.pt   the PoseDenoiser's state_dict (load with weights_only=True)
  cnd.pt       the CND statistics (mean and covariance of [error, condition])
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import torch

from .cnd.gaussian import ConditionalNoiseModel
from .data.windows import BATCH_SIZE, check_windows, refine_in_windows
from .denoiser.model import DenoiserConfig, PoseDenoiser
from .diffusion.process import ddim_refine
from .model_files import (CND_FILE, DEFAULT_MODEL, FORMAT, MODEL_FILE,  # noqa: F401
                          VERSION, WEIGHTS_FILE, D3PModelError, default_model_dir,
                          read_model_spec)
from .diffusion.schedule import DEFAULT_OFFSET, DEFAULT_TIMESTEPS, cosine_alpha_bar
from .skeleton import NUM_JOINTS, ROOT
from .trust import SPEC_KEY as THRESHOLD_KEY, threshold_from_spec

def error_scale_per_joint(cnd: ConditionalNoiseModel) -> torch.Tensor:
    """(17, 3) fixed scale of the denoiser's output; the root row is 1 (its output is 0)."""
    scale = torch.ones(NUM_JOINTS, 3, dtype=torch.float64)
    non_root = [j for j in range(NUM_JOINTS) if j != ROOT]
    scale[non_root] = torch.as_tensor(cnd.error_scale, dtype=torch.float64).reshape(-1, 3)
    return scale


class D3PRefiner:
    def __init__(self, denoiser: PoseDenoiser, cnd: ConditionalNoiseModel, *, steps: int = 2,
                 diffusion: bool = True, timesteps: int = DEFAULT_TIMESTEPS,
                 offset: float = DEFAULT_OFFSET, joint_uncertainty=None, info: dict | None = None,
                 device="cpu", dtype=torch.float32, stride: int | None = None,
                 correction_threshold: float = 0.0):
        self.device = torch.device(device)
        self.dtype = dtype
        self.denoiser = denoiser.to(self.device, dtype).eval()
        self.cnd = cnd
        self.diffusion = bool(diffusion)
        # without diffusion the network was trained for a single step from y_hat
        self.steps = int(steps) if self.diffusion else 1
        self.timesteps = int(timesteps)
        self.offset = float(offset)
        self.alpha_bar = cosine_alpha_bar(self.timesteps, self.offset).to(self.device)
        self.error_scale = error_scale_per_joint(cnd).to(self.device, dtype)
        if joint_uncertainty is None:
            joint_uncertainty = np.full(NUM_JOINTS, np.nan)
        self.joint_uncertainty = np.asarray(joint_uncertainty, dtype=np.float32).reshape(NUM_JOINTS)
        self.info = dict(info or {})
        # frames between window starts in refine_sequence: overlapping windows are averaged,
        # which removes the jumps at window joins (chosen on validation, docs/refiner.md)
        self.stride = self.window if stride is None else int(stride)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in 1..{self.window}, got {self.stride}")
        # metres; refine_sequence soft-thresholds each joint's final correction by it
        # (d3p_model/trust.py: what the network proposes on a correct skeleton is dropped)
        self.correction_threshold = threshold_from_spec(
            {THRESHOLD_KEY: 1000.0 * float(correction_threshold)})
        self._stream = None

    @property
    def window(self) -> int:
        return self.denoiser.config.window

    @property
    def causal(self) -> bool:
        """A causal model refines whole sequences (and streams: denoiser/streaming.py)."""
        return bool(self.denoiser.config.causal)

    # ---------------------------------------------------------------- persistence
    @classmethod
    def load(cls, model_dir, device="cpu", dtype=torch.float32) -> "D3PRefiner":
        model_dir = pathlib.Path(model_dir)
        model_path = model_dir / MODEL_FILE
        spec = read_model_spec(model_dir)
        try:
            config = DenoiserConfig.from_dict(spec["denoiser"])
            diffusion = spec["diffusion"]
            uncertainty = np.array([np.nan if v is None else float(v)
                                    for v in spec["joint_uncertainty"]])
            if uncertainty.shape != (NUM_JOINTS,):
                raise ValueError(f"joint_uncertainty has shape {uncertainty.shape}, "
                                 f"expected ({NUM_JOINTS},)")
            steps = int(spec["steps"])
            enabled = bool(diffusion["enabled"])
            timesteps, offset = int(diffusion["timesteps"]), float(diffusion["offset"])
            stride = int(spec.get("stride", config.window))   # older models: no overlap
            if not 1 <= stride <= config.window:
                raise ValueError(f"stride {stride} outside 1..{config.window}")
            threshold = threshold_from_spec(spec)
        except (KeyError, TypeError, ValueError) as err:
            raise D3PModelError(f"{model_path}: bad or missing entry ({err!r})") from err

        cnd_path = model_dir / CND_FILE
        if not cnd_path.is_file():
            raise D3PModelError(f"{cnd_path}: file is missing")
        try:
            cnd = ConditionalNoiseModel.load(cnd_path)
        except ValueError as err:
            raise D3PModelError(str(err)) from err

        weights_path = model_dir / WEIGHTS_FILE
        if not weights_path.is_file():
            raise D3PModelError(f"{weights_path}: file is missing")
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated/garbage files
            raise D3PModelError(f"{weights_path}: not a readable torch state_dict ({err})") from err
        denoiser = PoseDenoiser(config)
        try:
            denoiser.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            raise D3PModelError(f"{weights_path}: weights do not match the architecture in "
                                f"{MODEL_FILE} ({err})") from err
        return cls(denoiser, cnd, steps=steps, diffusion=enabled, timesteps=timesteps,
                   offset=offset, joint_uncertainty=uncertainty, info=spec.get("info", {}),
                   device=device, dtype=dtype, stride=stride,
                   correction_threshold=threshold)

    def spec(self) -> dict:
        return {
            "format": FORMAT, "version": VERSION,
            "denoiser": self.denoiser.config.to_dict(),
            "diffusion": {"enabled": self.diffusion, "timesteps": self.timesteps,
                          "offset": self.offset},
            "steps": self.steps,
            "stride": self.stride,
            THRESHOLD_KEY: round(1000.0 * self.correction_threshold, 6),
            # null marks an uncalibrated joint (a model that was never calibrated)
            "joint_uncertainty": [float(v) if np.isfinite(v) else None
                                  for v in self.joint_uncertainty],
            "info": self.info,
        }

    def save(self, model_dir) -> None:
        model_dir = pathlib.Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu", torch.float32).clone()
                 for k, v in self.denoiser.state_dict().items()}
        torch.save(state, model_dir / WEIGHTS_FILE)
        self.cnd.save(model_dir / CND_FILE)
        (model_dir / MODEL_FILE).write_text(json.dumps(self.spec(), indent=2, allow_nan=False)
                                            + "\n")

    # ---------------------------------------------------------------- inference
    def _predict_error(self, keypoints_2d: torch.Tensor):
        def predict(noisy_pose, t):
            return self.denoiser(noisy_pose, keypoints_2d, t) * self.error_scale
        return predict

    def refine_tensor(self, keypoints_2d: torch.Tensor, pose_3d: torch.Tensor,
                      steps: int | None = None) -> torch.Tensor:
        """Torch in, torch out, on self.device; the core of refine_windows (no checks)."""
        steps = self.steps if (steps is None or not self.diffusion) else int(steps)
        pose_3d = pose_3d - pose_3d[..., ROOT:ROOT + 1, :]
        refined = ddim_refine(pose_3d, self._predict_error(keypoints_2d), self.alpha_bar, steps)
        return refined - refined[..., ROOT:ROOT + 1, :]

    @torch.no_grad()
    def refine_windows(self, keypoints_2d, pose_3d, steps=None) -> np.ndarray:
        keypoints_2d = np.asarray(keypoints_2d)
        pose_3d = np.asarray(pose_3d)
        frames = keypoints_2d.shape[1] if self.causal and keypoints_2d.ndim == 4 else self.window
        check_windows(keypoints_2d, pose_3d, frames, NUM_JOINTS)
        if steps is not None and int(steps) < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.denoiser.eval()
        as_tensor = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa
        refined = self.refine_tensor(as_tensor(keypoints_2d), as_tensor(pose_3d), steps)
        return refined.to("cpu", torch.float32).numpy()

    # ---------------------------------------------------------------- streaming
    def stream_module(self, steps: int | None = None):
        """The causal model's one-frame step (denoiser/streaming.py), on this device."""
        from .denoiser.streaming import CausalStreamStep
        steps = self.steps if (steps is None or not self.diffusion) else int(steps)
        return CausalStreamStep(self.denoiser, self.error_scale, self.alpha_bar, steps)

    def history_shape(self, steps: int | None = None) -> tuple:
        from .causal_stream import history_shape
        return history_shape(self.denoiser.config.to_dict(),
                             self.steps if steps is None else int(steps))

    @torch.no_grad()
    def stream_step(self, keypoints_2d, pose_3d, history, history_offset, steps=None):
        """numpy (B, 17, 2), (B, 17, 3), (B, *history_shape(steps)), (B, W - 1) int ->
        refined (B, 17, 3) and the new frame's keys/values (causal models only;
        causal_stream.py). steps: DDIM steps (None: the model's)."""
        steps = self.steps if (steps is None or not self.diffusion) else int(steps)
        if self._stream is None or self._stream.steps != steps:
            self._stream = self.stream_module(steps)
        as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=self.dtype,  # noqa: E731
                                              device=self.device)
        outputs = self._stream(as_tensor(keypoints_2d), as_tensor(pose_3d), as_tensor(history),
                               torch.as_tensor(np.asarray(history_offset), dtype=torch.long,
                                               device=self.device))
        return tuple(o.to("cpu", torch.float32).numpy() for o in outputs)

    # windows per call in refine_sequence: large, for accelerators; on the CPU PyTorch runs
    # 16 and 256 windows per call alike (benchmarks/results/refine_latency_batches.md)
    default_batch_size = BATCH_SIZE

    def refine_sequence(self, keypoints_2d, pose_3d, stride=None, batch_size=None,
                        steps=None, correction_threshold=None) -> np.ndarray:
        """batch_size: windows per call (None: default_batch_size); correction_threshold:
        metres (None: the model's, 0: off). A causal model runs over the whole sequence at
        once, which is what a stream that starts at its first frame publishes (stride and
        batch_size do not apply)."""
        window = len(keypoints_2d) if self.causal else self.window
        if self.causal:
            stride, batch_size = window, 1
        return refine_in_windows(lambda kp, pose: self.refine_windows(kp, pose, steps),
                                 keypoints_2d, pose_3d, window, NUM_JOINTS,
                                 self.stride if stride is None else stride,
                                 batch_size or self.default_batch_size,
                                 self.correction_threshold if correction_threshold is None
                                 else correction_threshold)
