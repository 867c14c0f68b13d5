"""GENERATED data (never Human3.6M): plausible H36M-17 motion, cameras and a lifter-like error.

For tests, demos and smoke runs without the real data. Everything is deterministic given the
seeds and takes milliseconds.

- `synthetic_motion`: world-frame joint positions (metres, z up) of a random-proportioned
  body doing an action-flavoured cycle (walking with limb swings, gestures, crouching),
  moving on a bounded path with turning.
- `make_synthetic_predictions`: a `Predictions` object in the d3p predictions format, one
  random camera per view, pinhole 2D keypoints, root-relative camera-frame ground truth, and
  `pose_3d` = ground truth + an error that behaves like a real 2D-to-3D lifter's: a part
  that depends on the condition (depth compressed towards the body's mean depth, depth
  errors linear in the 2D pose), a per-sequence bone-length scale error, temporally
  correlated drift and per-frame jitter. MPJPE is about 40-80 mm at `error_scale=1`.

The "lifter" (the condition-dependent part of the error) is fixed by `lifter_seed`, not by
`seed`, so a train split and a test split made with different seeds/subjects share the same
systematic error, as outputs of one real lifter would.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..skeleton import NUM_JOINTS
from .predictions import Predictions, Sequence

# Ordered so that small sets still mix walking, gesturing and sitting actions.
ACTIONS = (
    "Walking", "Directions", "Eating", "Sitting", "Greeting", "Phoning", "WalkDog",
    "Discussion", "Photo", "Posing", "Purchases", "SittingDown", "Smoking", "Waiting",
    "WalkTogether",
)
IMAGE_SIZE = (1000.0, 1000.0)
NOTE = "GENERATED data (d3p_model.data.synthetic), not Human3.6M"

# Mean bone lengths in metres, roughly Human3.6M subjects'.
_BONE = {
    "hip": 0.13, "thigh": 0.45, "shin": 0.44, "spine": 0.23, "chest": 0.25,
    "neck": 0.11, "head": 0.12, "clavicle": 0.15, "upper_arm": 0.28, "forearm": 0.25,
}

# Per action: walking speed (m/s), leg swing and arm swing (rad), gesture amplitude (rad),
# crouch (0 standing .. 1 sitting), path radius (m).
_STYLE = {
    "walk": dict(speed=1.1, leg=0.45, arm=0.35, gesture=0.15, crouch=0.0, radius=1.4),
    "gesture": dict(speed=0.15, leg=0.08, arm=0.05, gesture=0.7, crouch=0.0, radius=0.5),
    "hand_to_head": dict(speed=0.05, leg=0.04, arm=0.05, gesture=0.5, crouch=0.1, radius=0.3),
    "sit": dict(speed=0.0, leg=0.03, arm=0.03, gesture=0.4, crouch=1.0, radius=0.2),
    "stand": dict(speed=0.1, leg=0.05, arm=0.05, gesture=0.3, crouch=0.05, radius=0.4),
}
_ACTION_STYLE = {
    "Walking": "walk", "WalkDog": "walk", "WalkTogether": "walk",
    "Directions": "gesture", "Discussion": "gesture", "Greeting": "gesture",
    "Photo": "gesture", "Purchases": "gesture",
    "Eating": "hand_to_head", "Phoning": "hand_to_head", "Smoking": "hand_to_head",
    "Sitting": "sit", "SittingDown": "sit",
    "Posing": "stand", "Waiting": "stand",
}


def _smooth_signal(rng, t, amplitude, low_hz=0.1, high_hz=0.8, terms=3):
    """A smooth random signal: a few sines with random frequency and phase."""
    freqs = rng.uniform(low_hz, high_hz, terms)
    phases = rng.uniform(0, 2 * np.pi, terms)
    weights = rng.normal(0, 1, terms) / np.sqrt(terms)
    return amplitude * np.sum(weights * np.sin(2 * np.pi * freqs * t[:, None] + phases), axis=1)


def _limb(flexion, abduction, side):
    """Unit vectors (F, 3) in the body frame (x forward, y left, z up) of a limb hanging
    down, swung forward by `flexion` and out sideways by `abduction` (side +1 left, -1 right)."""
    return np.stack([np.sin(flexion) * np.cos(abduction),
                     side * np.sin(abduction) * np.ones_like(flexion),
                     -np.cos(flexion) * np.cos(abduction)], axis=-1)


def _body_lengths(subject: str) -> dict:
    """A subject's bone lengths: overall size and per-bone proportions, left = right."""
    rng = np.random.default_rng(zlib.crc32(subject.encode()))
    size = rng.normal(1.0, 0.05)
    return {name: length * size * rng.normal(1.0, 0.04) for name, length in _BONE.items()}


def synthetic_motion(num_frames: int, seed: int = 0, fps: float = 50.0,
                     action: str = "Walking", subject: str = "SYN1") -> np.ndarray:
    """(num_frames, 17, 3) float64 world positions in metres (z up) of GENERATED motion."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    style = dict(_STYLE[_ACTION_STYLE.get(action, "stand")])
    bone = _body_lengths(subject)
    rng = np.random.default_rng([seed, zlib.crc32(subject.encode()), zlib.crc32(action.encode())])
    for name in ("speed", "leg", "arm", "gesture"):
        style[name] *= rng.uniform(0.75, 1.25)
    t = np.arange(num_frames) / fps
    step_hz = rng.uniform(0.8, 1.05)  # full gait cycles per second
    phase = 2 * np.pi * step_hz * t + rng.uniform(0, 2 * np.pi)
    crouch = np.clip(style["crouch"] + _smooth_signal(rng, t, 0.1 * style["crouch"] + 0.03), 0, 1)

    # Legs: hip flexion swings the thighs in antiphase; knees bend most during the swing.
    hip_bias = 1.45 * crouch
    knee_bias = 1.55 * crouch
    leg = style["leg"]
    right_hip = leg * np.sin(phase) + hip_bias
    left_hip = leg * np.sin(phase + np.pi) + hip_bias
    right_knee = 1.4 * leg * np.clip(np.sin(phase + 1.2), 0, None) + knee_bias
    left_knee = 1.4 * leg * np.clip(np.sin(phase + np.pi + 1.2), 0, None) + knee_bias
    # Arms: swing against the legs plus slow random gestures, elbows bent by the gesture.
    gesture = style["gesture"]
    r_sh_flex = -style["arm"] * np.sin(phase) + np.abs(_smooth_signal(rng, t, gesture)) + 0.1
    l_sh_flex = style["arm"] * np.sin(phase) + np.abs(_smooth_signal(rng, t, gesture)) + 0.1
    r_sh_abd = 0.15 + np.abs(_smooth_signal(rng, t, 0.5 * gesture))
    l_sh_abd = 0.15 + np.abs(_smooth_signal(rng, t, 0.5 * gesture))
    r_elbow = 0.3 + np.abs(_smooth_signal(rng, t, 1.5 * gesture))
    l_elbow = 0.3 + np.abs(_smooth_signal(rng, t, 1.5 * gesture))
    lean = 0.05 + 0.25 * crouch + _smooth_signal(rng, t, 0.05)
    twist = 0.08 * (leg / 0.45) * np.sin(phase) + _smooth_signal(rng, t, 0.1)
    nod = _smooth_signal(rng, t, 0.15, 0.2, 1.0)

    up = np.stack([np.sin(lean), np.zeros_like(lean), np.cos(lean)], axis=-1)
    head_dir = np.stack([np.sin(lean + nod), np.zeros_like(lean), np.cos(lean + nod)], axis=-1)
    cos_tw, sin_tw = np.cos(twist), np.sin(twist)
    left_axis = np.stack([-sin_tw, cos_tw, np.zeros_like(twist)], axis=-1)  # twisted shoulders

    joints = np.zeros((num_frames, NUM_JOINTS, 3))
    hip_offset = np.array([0.0, bone["hip"], 0.0])
    joints[:, 1] = -hip_offset
    joints[:, 4] = hip_offset
    joints[:, 2] = joints[:, 1] + bone["thigh"] * _limb(right_hip, 0.02, -1)
    joints[:, 3] = joints[:, 2] + bone["shin"] * _limb(right_hip - right_knee, 0.02, -1)
    joints[:, 5] = joints[:, 4] + bone["thigh"] * _limb(left_hip, 0.02, 1)
    joints[:, 6] = joints[:, 5] + bone["shin"] * _limb(left_hip - left_knee, 0.02, 1)
    joints[:, 7] = bone["spine"] * up
    joints[:, 8] = joints[:, 7] + bone["chest"] * up
    joints[:, 9] = joints[:, 8] + bone["neck"] * head_dir
    joints[:, 10] = joints[:, 9] + bone["head"] * head_dir
    joints[:, 11] = joints[:, 8] + bone["clavicle"] * left_axis
    joints[:, 14] = joints[:, 8] - bone["clavicle"] * left_axis
    joints[:, 12] = joints[:, 11] + bone["upper_arm"] * _limb(l_sh_flex, l_sh_abd, 1)
    joints[:, 13] = joints[:, 12] + bone["forearm"] * _limb(l_sh_flex + l_elbow, l_sh_abd, 1)
    joints[:, 15] = joints[:, 14] + bone["upper_arm"] * _limb(r_sh_flex, r_sh_abd, -1)
    joints[:, 16] = joints[:, 15] + bone["forearm"] * _limb(r_sh_flex + r_elbow, r_sh_abd, -1)

    # Stand the body on the ground: pelvis height from the lower supporting foot.
    pelvis_height = -np.minimum(joints[:, 3, 2], joints[:, 6, 2]) + 0.08
    # Sitting bodies rest on a seat instead of their feet.
    pelvis_height = (1 - crouch) * pelvis_height + crouch * 0.48

    # A bounded path: around a circle of the action's radius, heading along the path.
    radius = style["radius"] * rng.uniform(0.7, 1.3)
    angular = style["speed"] / max(radius, 1e-6) * rng.choice([-1, 1])
    angle = rng.uniform(0, 2 * np.pi) + angular * t
    wobble = _smooth_signal(rng, t, 0.3)
    heading = angle + np.sign(angular) * np.pi / 2 + wobble
    cos_h, sin_h = np.cos(heading), np.sin(heading)
    yaw = np.stack([np.stack([cos_h, -sin_h, 0 * cos_h], -1),
                    np.stack([sin_h, cos_h, 0 * cos_h], -1),
                    np.stack([0 * cos_h, 0 * cos_h, 1 + 0 * cos_h], -1)], axis=-2)  # (F, 3, 3)
    root = np.stack([radius * np.cos(angle), radius * np.sin(angle), pelvis_height], axis=-1)
    return np.einsum("fij,fkj->fki", yaw, joints) + root[:, None, :]


def _look_at_camera(rng, target):
    """A camera 3-6 m from `target`, 0.8-1.9 m high; returns (R world->camera, centre, f, c)."""
    distance = rng.uniform(3.0, 6.0)
    azimuth = rng.uniform(0, 2 * np.pi)
    centre = np.array([target[0] + distance * np.cos(azimuth),
                       target[1] + distance * np.sin(azimuth), rng.uniform(0.8, 1.9)])
    forward = np.asarray(target, dtype=float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])  # rows: camera x (right), y (down), z (view)
    focal = rng.normal(1150.0, 20.0)
    principal = np.array(IMAGE_SIZE) / 2 + rng.normal(0, 5, 2)
    return rotation, centre, focal, principal


def _lifter_error(gt, keypoints_norm, rng, lifter, fps, error_scale):
    """A lifter-like error (F, 17, 3) for root-relative camera-frame ground truth `gt`."""
    frames = gt.shape[0]
    # Depth compressed towards the body's mean depth (lifters under-estimate depth spread).
    depth = gt[..., 2]
    depth_error = -lifter["compression"] * (depth - depth.mean(axis=1, keepdims=True))
    # Depth errors that a linear map of the root-relative 2D pose predicts.
    pose2d = (keypoints_norm - keypoints_norm[:, :1]).reshape(frames, -1)
    depth_error = depth_error + pose2d @ lifter["depth_from_2d"]
    error = np.zeros_like(gt)
    error[..., 2] = depth_error
    # A per-sequence bone-length scale error.
    error += (rng.normal(0.0, 0.04) * gt)
    # Temporally correlated drift: smoothed white noise, about 0.3 s correlation time.
    width = max(1, int(round(0.3 * fps)))
    kernel = np.hanning(2 * width + 1)
    kernel /= np.sqrt(np.sum(kernel ** 2))
    white = rng.normal(0.0, 1.0, (frames + 2 * width, NUM_JOINTS, 3))
    drift = np.apply_along_axis(lambda s: np.convolve(s, kernel, mode="valid"), 0, white)
    error += 0.014 * drift * lifter["joint_scale"][None, :, None]
    # Per-frame jitter.
    error += rng.normal(0.0, 0.007, gt.shape) * lifter["joint_scale"][None, :, None]
    error *= error_scale
    error[:, 0] = 0.0  # root-relative: the root has no error
    return error


def _make_lifter(lifter_seed: int) -> dict:
    rng = np.random.default_rng([lifter_seed, 7])
    # Extremities are harder than the torso.
    joint_scale = np.array([0, 1, 1.3, 1.6, 1, 1.3, 1.6, 0.8, 0.9, 1.0, 1.1, 1.0, 1.4, 1.8,
                            1.0, 1.4, 1.8], dtype=float)
    return {
        "compression": rng.uniform(0.12, 0.18),
        "depth_from_2d": rng.normal(0.0, 0.03, (NUM_JOINTS * 2, NUM_JOINTS))
        * joint_scale[None, :],
        "joint_scale": joint_scale,
    }


def make_synthetic_predictions(num_sequences: int = 4, num_frames: int = 200, seed: int = 0,
                               error_scale: float = 1.0, subjects=None, actions=None,
                               num_cameras: int = 1, lifter_seed: int = 0, fps: float = 50.0,
                               keypoint_noise_px: float = 0.0) -> Predictions:
    """GENERATED predictions: `num_sequences` motions x `num_cameras` views each.

    Motions go round-robin over `subjects` (default ["SYN1"]), then over `actions` (default:
    the 15 Human3.6M action names, in an order that mixes styles), with keys
    "<subject>/<action> <n>/cam<c>". Pass disjoint `subjects` (and different `seed`s) for a
    train and a test split; keep `lifter_seed` the same so both share the lifter's error.
    `keypoint_noise_px` adds Gaussian noise to the 2D keypoints (detector-like input).
    """
    if num_sequences < 1 or num_frames < 1 or num_cameras < 1:
        raise ValueError("num_sequences, num_frames and num_cameras must be >= 1")
    subjects = list(subjects) if subjects is not None else ["SYN1"]
    actions = list(actions) if actions is not None else list(ACTIONS)
    if not subjects or not actions:
        raise ValueError("subjects and actions must not be empty")
    if any("/" in name for name in subjects + actions):
        raise ValueError("subject and action names must not contain '/'")
    lifter = _make_lifter(lifter_seed)
    sequences = {}
    for index in range(num_sequences):
        subject = subjects[index % len(subjects)]
        round_ = index // len(subjects)
        action = actions[round_ % len(actions)]
        trial = 1 + round_ // len(actions)
        motion_seed = seed * 1_000_003 + index
        world = synthetic_motion(num_frames, motion_seed, fps, action, subject)
        for cam in range(num_cameras):
            rng = np.random.default_rng([seed, zlib.crc32(subject.encode()), index, cam])
            target = world[:, 0].mean(axis=0)
            target[2] = rng.uniform(0.7, 1.1)
            rotation, centre, focal, principal = _look_at_camera(rng, target)
            camera = (world - centre) @ rotation.T  # (F, 17, 3)
            keypoints = focal * camera[..., :2] / camera[..., 2:3] + principal
            if keypoint_noise_px > 0:
                keypoints = keypoints + rng.normal(0.0, keypoint_noise_px, keypoints.shape)
            gt = camera - camera[:, :1]
            width, height = IMAGE_SIZE
            keypoints_norm = keypoints / width * 2 - np.array([1, height / width])
            error = _lifter_error(gt, keypoints_norm, rng, lifter, fps, error_scale)
            key = f"{subject}/{action} {trial}/cam{cam}"
            sequences[key] = Sequence(
                keypoints_2d=keypoints.astype(np.float32),
                image_size=np.array(IMAGE_SIZE, dtype=np.float32),
                pose_3d=(gt + error).astype(np.float32),
                ground_truth_3d=gt.astype(np.float32),
            )
    meta = {
        "estimator": "synthetic-lifter", "synthetic": True, "note": NOTE,
        "seed": seed, "lifter_seed": lifter_seed, "error_scale": error_scale,
        "subjects": subjects, "fps": fps, "keypoint_noise_px": keypoint_noise_px,
    }
    return Predictions(sequences, meta)
