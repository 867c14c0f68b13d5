"""Pose error metrics on (..., F, J, 3) arrays, in the units of the input (callers convert to mm).

- MPJPE (Human3.6M protocol 1): mean Euclidean distance per joint, over all joints of
  root-relative poses (the root then contributes 0, as in the usual practice).
- P-MPJPE (protocol 2): the same after aligning each predicted frame to its ground truth by
  the best similarity transform (rotation, uniform scale, translation). The rotation is
  proper (det +1): a mirrored prediction is not "aligned" by a reflection.
- Acceleration error: mean norm of the difference of second finite differences, per frame^2.

`*_per_frame` variants return one value per frame (mean over joints).
"""

from __future__ import annotations

import numpy as np


def _check_pair(pred, gt, name: str):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if pred.ndim < 2 or pred.shape[-1] != 3:
        raise ValueError(f"{name}: expected (..., J, 3) poses, got shape {pred.shape}")
    return pred, gt


def joint_errors(pred, gt) -> np.ndarray:
    """(..., J, 3) -> (..., J) Euclidean distance per joint."""
    pred, gt = _check_pair(pred, gt, "joint_errors")
    return np.linalg.norm(pred - gt, axis=-1)


def mpjpe_per_frame(pred, gt) -> np.ndarray:
    """(..., J, 3) -> (...) mean per-joint position error of each pose."""
    return joint_errors(pred, gt).mean(axis=-1)


def mpjpe(pred, gt) -> float:
    """Protocol 1: mean per-joint position error over all frames and joints."""
    return float(mpjpe_per_frame(pred, gt).mean())


def procrustes_transform(pred, gt):
    """The similarity transform (proper rotation, scale, translation) that best fits each
    pose of `pred` (..., J, 3) to the matching pose of `gt` in least squares:
    aligned = scale * (pred - mean_pred) @ rotation^T + mean_gt.
    Returns (rotation (..., 3, 3), scale (...), mean_pred (..., 1, 3), mean_gt (..., 1, 3))."""
    pred, gt = _check_pair(pred, gt, "procrustes_transform")
    mean_pred = pred.mean(axis=-2, keepdims=True)
    mean_gt = gt.mean(axis=-2, keepdims=True)
    centred_pred = pred - mean_pred
    centred_gt = gt - mean_gt
    # Maximise tr(R^T A), A = sum_i gt_i pred_i^T = U S V^T  ->  R = U D V^T.
    cross = np.swapaxes(centred_gt, -1, -2) @ centred_pred
    u, singular, vt = np.linalg.svd(cross)
    # D flips the weakest axis when U V^T is a reflection, keeping R a rotation.
    sign = np.sign(np.linalg.det(u @ vt))
    sign[sign == 0] = 1.0
    d = np.ones(singular.shape)
    d[..., -1] = sign
    rotation = (u * d[..., None, :]) @ vt
    spread = np.sum(centred_pred ** 2, axis=(-2, -1))
    # A collapsed prediction (all joints at one point) gets scale 0: it maps to the gt mean.
    scale = np.divide(np.sum(singular * d, axis=-1), spread,
                      out=np.zeros_like(spread), where=spread > 1e-12)
    return rotation, scale, mean_pred, mean_gt


def procrustes_align(pred, gt) -> np.ndarray:
    """Each pose of `pred` (..., J, 3) moved by the similarity transform (proper rotation,
    scale, translation) that best fits it to the matching pose of `gt` in least squares."""
    rotation, scale, mean_pred, mean_gt = procrustes_transform(pred, gt)
    centred_pred = np.asarray(pred, dtype=np.float64) - mean_pred
    aligned = scale[..., None, None] * (centred_pred @ np.swapaxes(rotation, -1, -2))
    return aligned + mean_gt


def rotation_angle(rotation) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (...) rotation angles in radians."""
    trace = np.trace(np.asarray(rotation), axis1=-2, axis2=-1)
    return np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0))


def p_mpjpe_per_frame(pred, gt) -> np.ndarray:
    """(..., J, 3) -> (...) MPJPE of each pose after similarity Procrustes alignment."""
    return mpjpe_per_frame(procrustes_align(pred, gt), gt)


def p_mpjpe(pred, gt) -> float:
    """Protocol 2: MPJPE after per-frame similarity Procrustes alignment."""
    return float(p_mpjpe_per_frame(pred, gt).mean())


def acceleration_error_per_frame(pred, gt) -> np.ndarray:
    """(..., F, J, 3) -> (..., F - 2): per inner frame, the mean over joints of
    |second difference of pred - second difference of gt| (units per frame^2)."""
    pred, gt = _check_pair(pred, gt, "acceleration_error")
    if pred.ndim < 3 or pred.shape[-3] < 3:
        raise ValueError(f"acceleration_error: needs (..., F, J, 3) with F >= 3 frames, "
                         f"got shape {pred.shape}")
    error = pred - gt
    accel = error[..., 2:, :, :] - 2 * error[..., 1:-1, :, :] + error[..., :-2, :, :]
    return np.linalg.norm(accel, axis=-1).mean(axis=-1)


def acceleration_error(pred, gt) -> float:
    """Mean acceleration error over all inner frames and joints (units per frame^2)."""
    return float(acceleration_error_per_frame(pred, gt).mean())
