"""Human3.6M loading: 3D motion capture to camera frames, ground-truth and detected 2D.

The data is research-only and lives outside the project (`../shared/data/h36m`); its path
comes from an argument or `D3P_DATA`. See that folder's README for the file layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..skeleton import ROOT, mpii16_to_h36m17

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")
CAMERAS = ("54138969", "55011271", "58860488", "60457274")
SETTINGS = ("gt2d", "sh2d")  # ground-truth 2D (projected, distorted) / Stacked Hourglass detections


def data_dir(path=None) -> Path:
    """Resolve the Human3.6M folder from an argument, `D3P_DATA`, or the shared checkout."""
    candidates = [path, os.environ.get("D3P_DATA"),
                  Path(__file__).resolve().parents[2].parent / "shared" / "data" / "h36m"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "positions_3d.npz").is_file():
            return Path(candidate)
    raise FileNotFoundError(
        "Human3.6M data not found: pass its folder (holding positions_3d.npz, cameras.json, "
        "detections_2d_sh.npz) as an argument or set D3P_DATA")


@dataclass(frozen=True)
class Camera:
    R: np.ndarray        # (3, 3) world -> camera rotation
    center: np.ndarray   # (3,) camera centre in world coordinates, metres
    f: np.ndarray        # (2,) focal lengths, pixels
    c: np.ndarray        # (2,) principal point, pixels
    k: np.ndarray        # (3,) radial distortion
    p: np.ndarray        # (2,) tangential distortion
    width: int
    height: int

    @property
    def image_size(self) -> np.ndarray:
        return np.array([self.width, self.height], dtype=np.float32)

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        return (points - self.center) @ self.R.T

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points (..., 3) to distorted pixels (..., 2), Human3.6M's own model."""
        xy = points_cam[..., :2] / points_cam[..., 2:3]
        r2 = np.sum(xy ** 2, axis=-1, keepdims=True)
        radial = 1 + self.k[0] * r2 + self.k[1] * r2 ** 2 + self.k[2] * r2 ** 3
        tangential = self.p[0] * xy[..., 1:2] + self.p[1] * xy[..., 0:1]
        distorted = xy * (radial + tangential) + self.p[::-1] * r2
        return (self.f * distorted + self.c).astype(np.float32)


def load_cameras(path=None) -> dict[str, dict[str, Camera]]:
    with open(data_dir(path) / "cameras.json") as f:
        raw = json.load(f)
    return {
        subject: {
            cam_id: Camera(
                R=np.asarray(c["R"], dtype=np.float64),
                center=np.asarray(c["T_mm"], dtype=np.float64).reshape(3) / 1000.0,
                f=np.asarray(c["f"], dtype=np.float64).reshape(2),
                c=np.asarray(c["c"], dtype=np.float64).reshape(2),
                k=np.asarray(c["k"], dtype=np.float64).reshape(3),
                p=np.asarray(c["p"], dtype=np.float64).reshape(2),
                width=int(c["width"]), height=int(c["height"]))
            for cam_id, c in cams.items()}
        for subject, cams in raw.items()}


@dataclass
class CameraSequence:
    """One sequence seen from one camera: the lifter's input and target."""
    key: str                      # "S9/Walking 1/54138969"
    keypoints_2d: np.ndarray      # (F, 17, 2) pixels (ground-truth projection or detections)
    image_size: np.ndarray        # (2,) width, height
    ground_truth_3d: np.ndarray   # (F, 17, 3) camera frame, root-relative, metres


@lru_cache(maxsize=2)
def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def load_sequences(setting: str, subjects, path=None) -> list[CameraSequence]:
    """All camera sequences of `subjects` with 2D from `setting` ('gt2d' or 'sh2d')."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    root = data_dir(path)
    cameras = load_cameras(root)
    positions = _load_npz(str(root / "positions_3d.npz"))
    detections = _load_npz(str(root / "detections_2d_sh.npz")) if setting == "sh2d" else None
    sequences = []
    for seq_key in sorted(positions):
        subject, action = seq_key.split("/")
        if subject not in subjects:
            continue
        world = positions[seq_key].astype(np.float64)
        for cam_id in CAMERAS:
            cam = cameras[subject][cam_id]
            cam_points = cam.world_to_camera(world)
            if setting == "gt2d":
                keypoints = cam.project(cam_points)
            else:
                det = detections.get(f"{seq_key}/{cam_id}")
                if det is None:  # S11 Directions, camera 54138969: no detections (corrupt video)
                    continue
                keypoints = mpii16_to_h36m17(det.astype(np.float32))
                frames = min(len(keypoints), len(cam_points))
                keypoints, cam_points = keypoints[:frames], cam_points[:frames]
            rel = cam_points - cam_points[:, ROOT:ROOT + 1]
            sequences.append(CameraSequence(
                key=f"{seq_key}/{cam_id}", keypoints_2d=keypoints.astype(np.float32),
                image_size=cam.image_size, ground_truth_3d=rel.astype(np.float32)))
    return sequences
