"""Joint layouts: H36M-17 (what every model here uses) and MPII-16 (the detector's)."""

import numpy as np

H36M17 = "h36m17"

H36M17_JOINTS = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
    "left_ankle", "spine", "thorax", "neck", "head", "left_shoulder", "left_elbow",
    "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
)
NUM_JOINTS = len(H36M17_JOINTS)
ROOT = 0
# Parent of each joint in the kinematic tree (-1 for the root); defines the bones drawn.
H36M17_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M17_BONES = tuple((p, j) for j, p in enumerate(H36M17_PARENTS) if p >= 0)
H36M17_LEFT = (4, 5, 6, 11, 12, 13)
H36M17_RIGHT = (1, 2, 3, 14, 15, 16)

MPII16_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top", "right_wrist", "right_elbow",
    "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)
# H36M-17 joint -> MPII-16 joint; the spine (7) has no MPII counterpart.
_MPII_FOR_H36M = (6, 2, 1, 0, 3, 4, 5, None, 7, 8, 9, 13, 14, 15, 12, 11, 10)


def mpii16_to_h36m17(keypoints: np.ndarray) -> np.ndarray:
    """Map (..., 16, C) MPII keypoints to (..., 17, C) H36M-17.

    The spine is the midpoint of pelvis and thorax, the usual convention when a detector
    has no spine joint.
    """
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != len(MPII16_JOINTS):
        raise ValueError(f"expected 16 MPII joints, got shape {keypoints.shape}")
    out = np.empty(keypoints.shape[:-2] + (NUM_JOINTS, keypoints.shape[-1]), dtype=np.float32)
    for h36m, mpii in enumerate(_MPII_FOR_H36M):
        if mpii is not None:
            out[..., h36m, :] = keypoints[..., mpii, :]
    out[..., 7, :] = 0.5 * (out[..., 0, :] + out[..., 8, :])
    return out
