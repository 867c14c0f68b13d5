"""Skeleton messages <-> numpy arrays, with the validation that keeps bad input out.

Every check raises `InvalidSkeleton` with a short `reason` (a diagnostics counter name) and
a sentence for the log. Reading functions accept any object with the message's fields, so
they are testable without the generated message classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from d3p_model.data.predictions import normalise_screen
from d3p_model.skeleton import H36M17, NUM_JOINTS, ROOT

ACCEPTED_LAYOUTS = ("", H36M17)

# Bounds of what a camera and a human body can produce. Values beyond them are not a pose
# (a detector's or lifter's garbage, a unit error), and the model would pass them through.
MIN_IMAGE_SIDE = 16             # pixels, each of width and height
MAX_IMAGE_SIDE = 32768
MAX_JOINT_DISTANCE_M = 3.0      # any joint from the pelvis; a body spans ~1.2 m, arms raised
MAX_ROOT_DISTANCE_M = 1000.0    # the pelvis of absolute input from the camera


class InvalidSkeleton(ValueError):
    """One person's message that cannot be used; `reason` names the diagnostics counter."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason


@dataclass
class Keypoints2D:
    track_id: int
    normalised: np.ndarray      # (17, 2) float32 normalised screen coords; NaN where not visible
    visible: np.ndarray         # (17,) bool: confidence > 0 and coordinates finite
    confidence: np.ndarray      # (17,) float32 in [0, 1]
    pixels: np.ndarray          # (17, 2) float32 as received; NaN where not visible


@dataclass
class Pose3D:
    track_id: int
    relative: np.ndarray        # (17, 3) float32 metres, root at the origin
    root: np.ndarray            # (3,) float32: what was subtracted (0 for root-relative input)
    root_relative: bool
    confidence: np.ndarray      # (17,) float32; ones when the message had none


def _check_layout(layout: str, track_id: int) -> None:
    if layout not in ACCEPTED_LAYOUTS:
        raise InvalidSkeleton(
            "wrong_layout", f"track {track_id}: layout {layout!r} is not supported (use {H36M17!r})")


def _confidence(values, track_id: int, what: str) -> np.ndarray:
    conf = np.asarray(values, dtype=np.float32)
    if conf.size == 0:
        return np.ones(NUM_JOINTS, dtype=np.float32)
    if conf.shape != (NUM_JOINTS,):
        raise InvalidSkeleton(
            "wrong_joint_count",
            f"track {track_id}: {what} confidence has {conf.size} values, expected {NUM_JOINTS} or 0")
    if not np.all(np.isfinite(conf)):
        raise InvalidSkeleton("non_finite", f"track {track_id}: {what} confidence contains NaN or inf")
    return np.clip(conf, 0.0, 1.0)


def skeleton2d_to_numpy(msg, max_missing_joints: int = NUM_JOINTS - 1) -> Keypoints2D:
    """Validate one Skeleton2D and normalise its pixels.

    Joints with confidence 0 are "not detected": their coordinates may be anything (NaN
    included) and are filled from the track's history later. Detected joints must be finite.
    """
    track_id = int(msg.track_id)
    _check_layout(msg.layout, track_id)
    u = np.asarray(msg.u, dtype=np.float32)
    v = np.asarray(msg.v, dtype=np.float32)
    if u.shape != (NUM_JOINTS,) or v.shape != (NUM_JOINTS,):
        raise InvalidSkeleton(
            "wrong_joint_count",
            f"track {track_id}: 2D skeleton has {u.size} u and {v.size} v values, expected {NUM_JOINTS}")
    width, height = int(msg.image_width), int(msg.image_height)
    if not (MIN_IMAGE_SIDE <= width <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= height <= MAX_IMAGE_SIDE):
        raise InvalidSkeleton(
            "bad_image_size", f"track {track_id}: image size {width}x{height} is outside "
            f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels per side")
    conf = _confidence(msg.confidence, track_id, "2D")
    pixels = np.stack([u, v], axis=-1)
    finite = np.all(np.isfinite(pixels), axis=-1)
    detected = conf > 0
    if np.any(detected & ~finite):
        raise InvalidSkeleton(
            "non_finite", f"track {track_id}: 2D coordinates of detected joints contain NaN or inf")
    visible = detected & finite
    missing = int(NUM_JOINTS - visible.sum())
    if missing > max_missing_joints:
        raise InvalidSkeleton(
            "too_many_missing_joints",
            f"track {track_id}: {missing} joints have confidence 0 (at most {max_missing_joints} allowed)")
    px = np.where(visible[:, None], pixels, 0.0).astype(np.float64)
    if np.any(px < -np.array([width, height])) or np.any(px > 2 * np.array([width, height])):
        raise InvalidSkeleton(
            "implausible_keypoints",
            f"track {track_id}: a detected 2D joint lies more than one image size "
            f"({width}x{height}) outside the image")
    normalised = normalise_screen(px, width, height)
    _require_finite(normalised[visible], track_id, "normalised 2D coordinates")
    normalised[~visible] = np.nan
    pixels = np.where(visible[:, None], pixels, np.nan).astype(np.float32)
    return Keypoints2D(track_id, normalised.astype(np.float32), visible, conf, pixels)


def skeleton3d_to_numpy(msg) -> Pose3D:
    """Validate one Skeleton3D; return it root-relative together with the root removed."""
    track_id = int(msg.track_id)
    _check_layout(msg.layout, track_id)
    positions = np.asarray(msg.positions, dtype=np.float32)
    if positions.shape != (NUM_JOINTS * 3,):
        raise InvalidSkeleton(
            "wrong_joint_count",
            f"track {track_id}: 3D skeleton has {positions.size} position values, expected {NUM_JOINTS * 3}")
    _require_finite(positions, track_id, "3D positions")
    positions = positions.reshape(NUM_JOINTS, 3).astype(np.float64)   # no float32 overflow below
    # Root-relative input should already have the root at 0; subtracting it either way keeps
    # the model's convention exact, and adding it back restores what came in.
    root = positions[ROOT].copy()
    relative = positions - root
    _require_finite(relative, track_id, "root-relative 3D positions")
    farthest = float(np.linalg.norm(relative, axis=-1).max())
    if farthest > MAX_JOINT_DISTANCE_M:
        raise InvalidSkeleton(
            "implausible_pose", f"track {track_id}: a joint lies {farthest:.3g} m from the pelvis "
            f"(a body allows at most {MAX_JOINT_DISTANCE_M} m)")
    root_distance = float(np.linalg.norm(root))
    if root_distance > MAX_ROOT_DISTANCE_M:
        raise InvalidSkeleton(
            "implausible_pose", f"track {track_id}: the pelvis lies {root_distance:.3g} m from the "
            f"camera (at most {MAX_ROOT_DISTANCE_M:g} m)")
    conf = _confidence(msg.confidence, track_id, "3D")
    return Pose3D(track_id, relative.astype(np.float32), root.astype(np.float32),
                  bool(msg.root_relative), conf)


def _require_finite(values: np.ndarray, track_id: int, what: str) -> None:
    # after every conversion too: finite input can overflow on the way (3e38 - -3e38 = inf)
    if not np.all(np.isfinite(values)):
        raise InvalidSkeleton("non_finite", f"track {track_id}: {what} contain NaN or inf")


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def fill_skeleton3d(msg, track_id: int, positions: np.ndarray, root_relative: bool,
                    confidence: np.ndarray, uncertainty: np.ndarray, header=None):
    """Write a refined pose into a (new) Skeleton3D message; positions must be finite."""
    positions = np.asarray(positions, dtype=np.float32).reshape(-1)
    if positions.shape != (NUM_JOINTS * 3,) or not np.all(np.isfinite(positions)):
        raise ValueError(f"track {track_id}: refusing to publish a non-finite or misshaped pose")
    if header is not None:
        msg.header = header
    msg.track_id = int(track_id)
    msg.layout = H36M17
    msg.root_relative = bool(root_relative)
    msg.positions = positions.tolist()
    msg.confidence = np.asarray(confidence, dtype=np.float32).tolist()
    msg.uncertainty = np.asarray(uncertainty, dtype=np.float32).tolist()
    return msg
