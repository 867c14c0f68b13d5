"""The predictions file: how any 2D-to-3D estimator's output enters d3p, and what the
refiner reads and writes. Format described in docs/predictions-format.md.

An `.npz` file with
- `__meta__`: a JSON string with at least {"format": "d3p-predictions", "version": 1,
  "layout": "h36m17"} and free-form provenance (estimator, setting, ...);
- per sequence `<subject>/<action>/<camera>` (any key without `/`-components is fine too,
  e.g. `my_video`; the action is the second component when present), the arrays
  `<seq>/keypoints_2d`  float32 (F, J, 2)  pixels
  `<seq>/image_size`    float32 (2,)       [width, height] in pixels
  `<seq>/pose_3d`       float32 (F, J, 3)  metres, camera frame, root-relative
  and optionally
  `<seq>/ground_truth_3d` float32 (F, J, 3) same convention as pose_3d
  `<seq>/confidence_2d`   float32 (F, J)    in [0, 1]
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..skeleton import H36M17, NUM_JOINTS

FORMAT = "d3p-predictions"
VERSION = 1
REQUIRED = ("keypoints_2d", "image_size", "pose_3d")
OPTIONAL = ("ground_truth_3d", "confidence_2d")


class PredictionsFormatError(ValueError):
    """A predictions file that does not follow the format; the message names key and problem."""


@dataclass
class Sequence:
    keypoints_2d: np.ndarray            # (F, J, 2) pixels
    image_size: np.ndarray              # (2,) width, height
    pose_3d: np.ndarray                 # (F, J, 3) metres, root-relative
    ground_truth_3d: np.ndarray | None = None
    confidence_2d: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return int(self.pose_3d.shape[0])

    def keypoints_normalised(self) -> np.ndarray:
        """Screen coordinates normalised so that x spans [-1, 1] (aspect ratio kept)."""
        return normalise_screen(self.keypoints_2d, *self.image_size)


@dataclass
class Predictions:
    sequences: dict[str, Sequence]
    meta: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.sequences)

    def items(self):
        return self.sequences.items()


def normalise_screen(pixels: np.ndarray, width: float, height: float) -> np.ndarray:
    pixels = np.asarray(pixels, dtype=np.float32)
    return pixels / np.float32(width) * 2 - np.array([1, height / width], dtype=np.float32)


def action_of(key: str) -> str:
    """'S9/Walking 1/54138969' -> 'Walking'. Keys without an action give the key itself."""
    parts = key.split("/")
    name = parts[1] if len(parts) > 1 else parts[0]
    return re.sub(r"\s*\d+$", "", name).strip() or name


def _json_default(value):
    # numpy scalars/arrays in provenance (seeds, shapes) are common; store them as plain JSON.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"meta value {value!r} of type {type(value).__name__} is not JSON-serialisable")


def save_predictions(path, predictions: Predictions) -> None:
    """Write `predictions` to exactly `path` (no '.npz' is appended)."""
    meta = {**predictions.meta, "format": FORMAT, "version": VERSION, "layout": H36M17}
    arrays = {"__meta__": np.array(json.dumps(meta, default=_json_default))}
    for key, seq in predictions.sequences.items():
        if not isinstance(key, str) or not key or key.startswith("/") or key.endswith("/"):
            raise PredictionsFormatError(
                f"{path}: sequence key {key!r} must be a non-empty string without a leading "
                f"or trailing '/'")
        _check_sequence(key, {name: getattr(seq, name) for name in REQUIRED + OPTIONAL
                              if getattr(seq, name) is not None}, str(path))
        for name in REQUIRED + OPTIONAL:
            value = getattr(seq, name)
            if value is not None:
                arrays[f"{key}/{name}"] = np.asarray(value, dtype=np.float32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Through a file object: np.savez would append '.npz' to a bare path. Uncompressed:
    # float poses deflate by only about a quarter, and compressing the Human3.6M test set
    # took longer than any step of `d3p refine` but the refinement (docs/performance.md).
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_predictions(path) -> Predictions:
    path = str(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError as err:
        raise PredictionsFormatError(f"{path}: no such file") from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise PredictionsFormatError(f"{path}: not a readable .npz file ({err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):  # a plain .npy array
        raise PredictionsFormatError(f"{path}: not an .npz archive (a single .npy array?)")
    with data:
        if "__meta__" not in data.files:
            raise PredictionsFormatError(f"{path}: key '__meta__' is missing")
        try:
            meta = json.loads(str(data["__meta__"]))
        except (json.JSONDecodeError, ValueError, zipfile.BadZipFile) as err:
            raise PredictionsFormatError(f"{path}: key '__meta__' is not JSON ({err})") from err
        if not isinstance(meta, dict):
            raise PredictionsFormatError(
                f"{path}: key '__meta__' must be a JSON object, got {type(meta).__name__}")
        if meta.get("format") != FORMAT:
            raise PredictionsFormatError(
                f"{path}: key '__meta__' has format {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("version") != VERSION:
            raise PredictionsFormatError(
                f"{path}: key '__meta__' has version {meta.get('version')!r}; "
                f"this d3p reads version {VERSION}")
        if meta.get("layout", H36M17) != H36M17:
            raise PredictionsFormatError(
                f"{path}: key '__meta__' has layout {meta.get('layout')!r}; only {H36M17!r} is supported")
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for name in data.files:
            if name == "__meta__":
                continue
            seq_key, _, array_name = name.rpartition("/")
            if not seq_key or array_name not in REQUIRED + OPTIONAL:
                raise PredictionsFormatError(
                    f"{path}: key '{name}' is not '<sequence>/<array>' with array one of "
                    f"{REQUIRED + OPTIONAL}")
            try:
                grouped.setdefault(seq_key, {})[array_name] = data[name]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
                raise PredictionsFormatError(
                    f"{path}: key '{name}' cannot be read as a numeric array ({err})") from err
    sequences = {}
    for key, arrays in grouped.items():
        _check_sequence(key, arrays, path)
        sequences[key] = Sequence(**{k: v.astype(np.float32) for k, v in arrays.items()})
    return Predictions(sequences, meta)


def _check_sequence(key: str, arrays: dict, path: str) -> None:
    for name in REQUIRED:
        if name not in arrays:
            raise PredictionsFormatError(f"{path}: key '{key}/{name}' is missing")
    frames = np.shape(arrays["pose_3d"])[0] if np.ndim(arrays["pose_3d"]) else None
    expected = {
        "keypoints_2d": (frames, NUM_JOINTS, 2),
        "image_size": (2,),
        "pose_3d": (frames, NUM_JOINTS, 3),
        "ground_truth_3d": (frames, NUM_JOINTS, 3),
        "confidence_2d": (frames, NUM_JOINTS),
    }
    for name, value in arrays.items():
        shape = np.shape(value)
        if shape != expected[name]:
            raise PredictionsFormatError(
                f"{path}: key '{key}/{name}' has shape {shape}, expected {expected[name]} "
                f"(F = {frames} frames from '{key}/pose_3d', J = {NUM_JOINTS} joints)")
        if not np.issubdtype(np.asarray(value).dtype, np.number):
            raise PredictionsFormatError(f"{path}: key '{key}/{name}' is not numeric")
        if not np.all(np.isfinite(value)):
            raise PredictionsFormatError(f"{path}: key '{key}/{name}' contains NaN or inf")
    if frames == 0:
        raise PredictionsFormatError(f"{path}: key '{key}/pose_3d' has no frames")
    if np.any(np.asarray(arrays["image_size"]) <= 0):
        raise PredictionsFormatError(f"{path}: key '{key}/image_size' must be positive")
