"""Fit, condition and sample the CND (design: refiner.md, "Conditional noisy-pose distribution").

One joint Gaussian per frame over z = [e, c]:
  e = y_hat - y0 for the 16 non-root joints (48 dims; the root error is identically 0),
  c = [x (17 x 2 normalised screen coordinates), y_hat (16 non-root joints x 3)] (82 dims).
Conditioning on c gives e | c ~ N(m(c), S) with
  m(c) = mu_e + Sigma_ec Sigma_cc^-1 (c - mu_c),  S = Sigma_ee - Sigma_ec Sigma_cc^-1 Sigma_ce.
Sigma_cc^-1 is never formed: a Cholesky factor of the ridged Sigma_cc solves for the gain.

A lifter's errors are smooth in time (residual autocorrelation 0.996 at lag 1 of 50 Hz,
0.51 at one second on the base lifter's held-out outputs: `d3p fit-cnd --temporal-lags`),
and a per-frame white residual
teaches the denoiser only to smooth. So the residual z = L^-1 (e - m(c)) keeps its measured
temporal autocorrelation: `temporal_acf[d, k]` for whitened dimension d at lag k, fitted by
`with_temporal_correlation`; windows are drawn with a Toeplitz correlation per dimension
(dimensions independent of each other, as L already decorrelates them within a frame).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from ..skeleton import NUM_JOINTS, ROOT

NON_ROOT = tuple(j for j in range(NUM_JOINTS) if j != ROOT)
ERROR_DIM = 3 * len(NON_ROOT)                       # 48
CONDITION_DIM = 2 * NUM_JOINTS + 3 * len(NON_ROOT)  # 34 + 48 = 82
FORMAT = "d3p-cnd"
VERSION = 2   # 2 adds temporal_acf; version 1 files (white residual) still load


def error_vectors(pose_3d: np.ndarray, ground_truth_3d: np.ndarray) -> np.ndarray:
    """(..., 17, 3) estimate and truth -> (..., 48) non-root errors."""
    diff = np.asarray(pose_3d, np.float64) - np.asarray(ground_truth_3d, np.float64)
    return diff[..., NON_ROOT, :].reshape(diff.shape[:-2] + (ERROR_DIM,))


def condition_vectors(keypoints_2d: np.ndarray, pose_3d: np.ndarray) -> np.ndarray:
    """(..., 17, 2) normalised 2D and (..., 17, 3) estimate -> (..., 82) conditions c."""
    x = np.asarray(keypoints_2d, np.float64)
    y = np.asarray(pose_3d, np.float64)[..., NON_ROOT, :]
    lead = x.shape[:-2]
    return np.concatenate([x.reshape(lead + (-1,)), y.reshape(lead + (-1,))], axis=-1)


@dataclass
class ConditionalNoiseModel:
    mean: np.ndarray        # (130,) mean of [e, c]
    cov: np.ndarray         # (130, 130) covariance of [e, c]
    ridge: float            # relative ridge added to Sigma_cc (times its mean diagonal)
    num_frames: int         # frames the statistics were fitted on
    gain: np.ndarray = None         # (48, 82) Sigma_ec Sigma_cc^-1
    cond_cov: np.ndarray = None     # (48, 48) S
    cond_chol: np.ndarray = None    # (48, 48) lower Cholesky factor of S
    error_scale: np.ndarray = None  # (48,) RMS of e per dimension: the denoiser's fixed scale
    temporal_acf: np.ndarray = None  # (48, lags) residual autocorrelation; None: white in time

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float64)
        self.cov = np.asarray(self.cov, np.float64)
        size = ERROR_DIM + CONDITION_DIM
        if self.mean.shape != (size,) or self.cov.shape != (size, size):
            raise ValueError(f"CND statistics must be ({size},) and ({size}, {size}), got "
                             f"{self.mean.shape} and {self.cov.shape}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.cov))):
            raise ValueError("CND statistics contain NaN or inf")
        if self.temporal_acf is not None:
            acf = np.asarray(self.temporal_acf, np.float64)
            if acf.ndim != 2 or acf.shape[0] != ERROR_DIM or acf.shape[1] < 1 \
                    or not np.all(np.isfinite(acf)) or np.any(np.abs(acf) > 1 + 1e-6):
                raise ValueError(f"temporal_acf must be ({ERROR_DIM}, lags) with finite values "
                                 f"in [-1, 1], got shape {acf.shape}")
            self.temporal_acf = acf
        self._condition()

    @classmethod
    def fit(cls, errors: np.ndarray, conditions: np.ndarray, ridge: float = 1e-6):
        """Maximum-likelihood mean and covariance of [e, c] from (N, 48) and (N, 82) rows."""
        errors = np.asarray(errors, np.float64)
        conditions = np.asarray(conditions, np.float64)
        if errors.ndim != 2 or errors.shape[1] != ERROR_DIM:
            raise ValueError(f"errors must be (N, {ERROR_DIM}), got {errors.shape}")
        if conditions.shape != (errors.shape[0], CONDITION_DIM):
            raise ValueError(f"conditions must be ({errors.shape[0]}, {CONDITION_DIM}), "
                             f"got {conditions.shape}")
        if errors.shape[0] < 2:
            raise ValueError("fitting the CND needs at least 2 frames")
        joint = np.concatenate([errors, conditions], axis=1)
        mean = joint.mean(axis=0)
        centred = joint - mean
        cov = centred.T @ centred / joint.shape[0]
        return cls(mean=mean, cov=cov, ridge=float(ridge), num_frames=int(joint.shape[0]))

    @classmethod
    def fit_sequences(cls, sequences, ridge: float = 1e-6):
        """Fit on an iterable of (keypoints_2d normalised, pose_3d, ground_truth_3d) arrays.

        Streams: per-sequence means and centred scatter matrices are merged (Chan et al.'s
        pairwise update), so memory stays at one sequence whatever the dataset size.
        """
        count, mean, scatter = 0, None, None
        for keypoints, pose, truth in sequences:
            rows = np.concatenate([error_vectors(pose, truth).reshape(-1, ERROR_DIM),
                                   condition_vectors(keypoints, pose).reshape(-1, CONDITION_DIM)],
                                  axis=1)
            n = rows.shape[0]
            if n == 0:
                continue
            seq_mean = rows.mean(axis=0)
            centred = rows - seq_mean
            seq_scatter = centred.T @ centred
            if count == 0:
                count, mean, scatter = n, seq_mean, seq_scatter
                continue
            delta = seq_mean - mean
            total = count + n
            scatter = scatter + seq_scatter + np.outer(delta, delta) * (count * n / total)
            mean = mean + delta * (n / total)
            count = total
        if count < 2:
            raise ValueError("fitting the CND needs at least 2 frames")
        return cls(mean=mean, cov=scatter / count, ridge=float(ridge), num_frames=int(count))

    def residuals(self, keypoints_2d, pose_3d, ground_truth_3d) -> np.ndarray:
        """Whitened residuals z = L^-1 (e - m(c)) of one sequence: (F, 48)."""
        e = error_vectors(pose_3d, ground_truth_3d).reshape(-1, ERROR_DIM)
        c = condition_vectors(keypoints_2d, pose_3d).reshape(-1, CONDITION_DIM)
        return scipy.linalg.solve_triangular(self.cond_chol, (e - self.conditional_mean(c)).T,
                                             lower=True).T

    def with_temporal_correlation(self, sequences, lags: int = 243) -> "ConditionalNoiseModel":
        """A copy whose residual keeps the autocorrelation measured on `sequences` (the same
        (keypoints, pose, truth) triples as fit_sequences), at lags 0..lags-1."""
        if lags < 1:
            raise ValueError(f"lags must be >= 1, got {lags}")
        products = np.zeros((ERROR_DIM, lags))
        pairs = np.zeros(lags)
        for sequence in sequences:
            z = self.residuals(*sequence)
            frames = z.shape[0]
            if frames == 0:
                continue
            # all lags at once: autocorrelation through a zero-padded FFT
            size = 1 << int(np.ceil(np.log2(2 * frames)))
            spectrum = np.fft.rfft(z.T, n=size)
            corr = np.fft.irfft(spectrum * np.conj(spectrum), n=size)[:, :lags]
            usable = min(lags, frames)
            products[:, :usable] += corr[:, :usable]
            pairs[:usable] += frames - np.arange(usable)
        if pairs[0] == 0:
            raise ValueError("no frames to measure the temporal correlation on")
        known = pairs > 0
        covariance = products[:, known] / pairs[known]
        acf = covariance / np.maximum(covariance[:, :1], 1e-12)
        return ConditionalNoiseModel(mean=self.mean, cov=self.cov, ridge=self.ridge,
                                     num_frames=self.num_frames,
                                     temporal_acf=np.clip(acf, -1.0, 1.0))

    def temporal_factors(self, frames: int) -> np.ndarray | None:
        """(48, T, T) lower factors C_d with C_d C_d^T = the residual's correlation over T
        frames, or None when the residual is white in time."""
        if self.temporal_acf is None:
            return None
        if frames > self.temporal_acf.shape[1]:
            raise ValueError(f"the CND's temporal correlation covers {self.temporal_acf.shape[1]} "
                             f"frames, a window of {frames} needs more")
        factors = np.empty((ERROR_DIM, frames, frames))
        for d in range(ERROR_DIM):
            # an empirical autocorrelation need not be positive definite: clip its spectrum
            values, vectors = np.linalg.eigh(scipy.linalg.toeplitz(self.temporal_acf[d, :frames]))
            values = np.maximum(values, 1e-6)
            corr = (vectors * values) @ vectors.T
            corr /= np.sqrt(np.outer(np.diag(corr), np.diag(corr)))
            factors[d] = _robust_cholesky(corr)
        return factors

    def _condition(self):
        e, c = slice(0, ERROR_DIM), slice(ERROR_DIM, None)
        sigma_cc = self.cov[c, c] + self.ridge * max(np.mean(np.diag(self.cov[c, c])), 1e-12) \
            * np.eye(CONDITION_DIM)
        factor = scipy.linalg.cho_factor(sigma_cc, lower=True)
        # gain^T = Sigma_cc^-1 Sigma_ce, by two triangular solves
        self.gain = scipy.linalg.cho_solve(factor, self.cov[c, e]).T
        cond_cov = self.cov[e, e] - self.gain @ self.cov[c, e]
        self.cond_cov = 0.5 * (cond_cov + cond_cov.T)
        self.cond_chol = _robust_cholesky(self.cond_cov)
        self.error_scale = np.sqrt(self.mean[e] ** 2 + np.diag(self.cov[e, e]))
        self.error_scale = np.maximum(self.error_scale, 1e-6)

    @property
    def error_mean(self) -> np.ndarray:
        return self.mean[:ERROR_DIM]

    @property
    def condition_mean(self) -> np.ndarray:
        return self.mean[ERROR_DIM:]

    def conditional_mean(self, conditions: np.ndarray) -> np.ndarray:
        """m(c) for (..., 82) conditions -> (..., 48)."""
        return self.error_mean + (np.asarray(conditions, np.float64) - self.condition_mean) @ self.gain.T

    def sample(self, conditions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """e~ = m(c) + L z, one draw per condition row."""
        mean = self.conditional_mean(conditions)
        z = rng.standard_normal(mean.shape)
        return mean + z @ self.cond_chol.T

    def explained_fraction(self) -> float:
        """1 - tr(S) / tr(Sigma_ee): how much of the error variance the condition explains."""
        total = np.trace(self.cov[:ERROR_DIM, :ERROR_DIM])
        return float(1 - np.trace(self.cond_cov) / total) if total > 0 else 0.0

    def save(self, path) -> None:
        # A tensor file like weights.pt: the CND's statistics are model parameters, loaded
        # with weights_only=True.
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "version": VERSION, "mean": torch.from_numpy(self.mean),
                "cov": torch.from_numpy(self.cov), "ridge": float(self.ridge),
                "num_frames": int(self.num_frames)}
        if self.temporal_acf is not None:
            data["temporal_acf"] = torch.from_numpy(self.temporal_acf)
        torch.save(data, path)

    @classmethod
    def load(cls, path) -> "ConditionalNoiseModel":
        """Raises ValueError naming the file on anything missing or malformed."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict):
                raise ValueError("not a mapping")
            if data.get("format") != FORMAT or data.get("version") not in (1, VERSION):
                raise ValueError(f"format {data.get('format')!r} version "
                                 f"{data.get('version')!r}, expected {FORMAT!r} 1..{VERSION}")
            acf = data.get("temporal_acf")
            return cls(mean=data["mean"].numpy(), cov=data["cov"].numpy(),
                       ridge=float(data["ridge"]), num_frames=int(data["num_frames"]),
                       temporal_acf=None if acf is None else acf.numpy())
        except Exception as err:  # torch.load raises many types on foreign or corrupt files
            raise ValueError(f"{path}: not a valid CND file ({err})") from err

    def to_torch(self, device="cpu", dtype=torch.float32) -> "TorchCND":
        return TorchCND(self, device, dtype)


def _robust_cholesky(matrix: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; adds growing jitter if S is only positive semi-definite."""
    scale = max(float(np.mean(np.diag(matrix))), 1e-12)
    for jitter in (0.0, 1e-10, 1e-8, 1e-6, 1e-4):
        try:
            return np.linalg.cholesky(matrix + jitter * scale * np.eye(matrix.shape[0]))
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("the conditional error covariance is not positive definite")


class TorchCND:
    """Batched sampling of e~ on the training device (no numpy round trip per step)."""

    def __init__(self, model: ConditionalNoiseModel, device="cpu", dtype=torch.float32):
        as_tensor = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
        self.error_mean = as_tensor(model.error_mean)
        self.condition_mean = as_tensor(model.condition_mean)
        self.gain_t = as_tensor(model.gain.T)          # (82, 48)
        self.chol_t = as_tensor(model.cond_chol.T)     # (48, 48)
        self.error_scale = as_tensor(model.error_scale)
        self._model = model
        self._factors = {}   # window length -> (48, T, T) temporal factors on the device
        self._as_tensor = as_tensor

    def conditions(self, keypoints_2d: torch.Tensor, pose_3d: torch.Tensor) -> torch.Tensor:
        """(..., 17, 2), (..., 17, 3) -> (..., 82)."""
        lead = keypoints_2d.shape[:-2]
        return torch.cat([keypoints_2d.reshape(lead + (-1,)),
                          pose_3d[..., 1:, :].reshape(lead + (-1,))], dim=-1)

    def conditional_mean(self, conditions: torch.Tensor) -> torch.Tensor:
        return self.error_mean + (conditions - self.condition_mean) @ self.gain_t

    def sample(self, keypoints_2d: torch.Tensor, pose_3d: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """e~ for every frame, as full (..., 17, 3) poses with a zero root error. Windows
        (B, T, 17, .) get a temporally correlated residual when the CND has one."""
        mean = self.conditional_mean(self.conditions(keypoints_2d, pose_3d))
        z = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        if self._model.temporal_acf is not None and mean.dim() == 3:
            frames = mean.shape[1]
            if frames not in self._factors:
                self._factors[frames] = self._as_tensor(self._model.temporal_factors(frames))
            z = torch.einsum("dts,bsd->btd", self._factors[frames], z)
        error = mean + z @ self.chol_t
        return torch.cat([torch.zeros_like(error[..., :3]), error], dim=-1).reshape(
            pose_3d.shape)
