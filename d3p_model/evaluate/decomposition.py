"""Where MPJPE and P-MPJPE disagree: the rigid part of an error, per action.

P-MPJPE removes the best similarity transform per frame; what it removes is a global
rotation and a uniform scale (translation is ~0 for root-relative poses). A refiner can fix
the shape (P-MPJPE down) and still lose on MPJPE when it turns or shrinks the whole
skeleton. This reports, per action, the mean Procrustes rotation angle (degrees) and the
size of the prediction relative to the ground truth (RMS distance of the joints from their
centroid; 1 = right size); MPJPE and P-MPJPE themselves are `report.evaluate_predictions`'.
"""

from __future__ import annotations

import numpy as np

from ..data.predictions import Predictions, action_of
from .metrics import procrustes_transform, rotation_angle
from .report import _root_relative, _select_keys

QUANTITIES = ("rotation_deg", "size_ratio")


def sequence_rigid_errors(pose_3d: np.ndarray, ground_truth_3d: np.ndarray) -> dict:
    """Per-frame Procrustes rotation (deg) and size ratio."""
    pred = _root_relative(pose_3d)
    truth = _root_relative(ground_truth_3d)
    rotation, _, mean_pred, mean_gt = procrustes_transform(pred, truth)
    size_pred = np.sqrt(np.mean(np.sum((pred - mean_pred) ** 2, axis=-1), axis=-1))
    size_gt = np.sqrt(np.mean(np.sum((truth - mean_gt) ** 2, axis=-1), axis=-1))
    return {"rotation_deg": np.degrees(rotation_angle(rotation)),
            "size_ratio": np.divide(size_pred, size_gt, out=np.ones_like(size_pred),
                                    where=size_gt > 1e-9)}


def rigid_decomposition(predictions: Predictions, keys=None, subjects=None) -> dict:
    """{"actions": {action: {quantity: mean over its frames}}, "average": mean over actions}.
    Needs ground_truth_3d in every selected sequence."""
    per_action: dict[str, dict[str, list]] = {}
    for key in _select_keys(predictions, keys, subjects):
        seq = predictions.sequences[key]
        if seq.ground_truth_3d is None:
            raise ValueError(f"{key}: no ground_truth_3d to decompose the error against")
        values = sequence_rigid_errors(seq.pose_3d, seq.ground_truth_3d)
        bucket = per_action.setdefault(action_of(key), {q: [] for q in QUANTITIES})
        for quantity in QUANTITIES:
            bucket[quantity].append(values[quantity])
    if not per_action:
        raise ValueError("no sequences to decompose")
    actions = {action: {q: float(np.concatenate(v[q]).mean()) for q in QUANTITIES}
               for action, v in sorted(per_action.items())}
    average = {q: float(np.mean([a[q] for a in actions.values()])) for q in QUANTITIES}
    return {"actions": actions, "average": average}


def decomposition_table(results: dict[str, dict]) -> str:
    """Markdown: one row per action, for each label the rotation and the size."""
    labels = list(results)
    header = ["Action"] + [f"{label} {name}" for label in labels
                           for name in ("rot °", "size")]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" + "---:|" * (len(header) - 1)]
    actions = list(results[labels[0]]["actions"])
    for action in actions + ["**Average**"]:
        cells = [action]
        for label in labels:
            row = results[label]["average" if action == "**Average**" else "actions"]
            row = row if action == "**Average**" else row[action]
            cells += [f"{row['rotation_deg']:.1f}", f"{row['size_ratio']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
