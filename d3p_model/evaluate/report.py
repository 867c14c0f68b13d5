"""Per-action evaluation of prediction files, alone or side by side, as a dict and as markdown.

The protocol: within an action, errors are pooled over all its frames (all subjects, trials
and cameras); the headline number is the mean of the per-action means (each action weighs
the same, as Human3.6M tables do). The frame-weighted mean over all frames is given too.
Poses are made root-relative (joint 0 subtracted) before scoring, a no-op for files that
follow the format. Results are in millimetres (accel: mm / frame^2).
"""

from __future__ import annotations

import numpy as np

from ..data.predictions import Predictions, action_of
from .metrics import acceleration_error_per_frame, mpjpe_per_frame, p_mpjpe_per_frame

METRICS = ("mpjpe", "p_mpjpe", "accel")
METRIC_TITLES = {"mpjpe": "MPJPE", "p_mpjpe": "P-MPJPE", "accel": "Accel"}
UNITS = {"mpjpe": "mm", "p_mpjpe": "mm", "accel": "mm/frame^2"}
# Tolerance when checking that several files carry the same ground truth (metres).
GROUND_TRUTH_ATOL = 1e-4


class EvaluationError(ValueError):
    """Predictions that cannot be evaluated (no ground truth, files disagreeing, ...)."""


def subject_of(key: str) -> str:
    """'S9/Walking 1/54138969' -> 'S9' (the first key component)."""
    return key.split("/")[0]


def _root_relative(poses: np.ndarray) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    return poses - poses[:, :1]


def sequence_errors(pose_3d: np.ndarray, ground_truth_3d: np.ndarray) -> dict:
    """Per-frame errors of one sequence in mm: {"mpjpe": (F,), "p_mpjpe": (F,), "accel": (F-2,)}."""
    pred = _root_relative(pose_3d) * 1000.0
    gt = _root_relative(ground_truth_3d) * 1000.0
    accel = (acceleration_error_per_frame(pred, gt) if len(pred) >= 3 else np.zeros(0))
    return {"mpjpe": mpjpe_per_frame(pred, gt), "p_mpjpe": p_mpjpe_per_frame(pred, gt),
            "accel": accel}


def _select_keys(predictions: Predictions, keys=None, subjects=None) -> list[str]:
    keys = list(predictions.sequences) if keys is None else list(keys)
    if subjects is not None:
        wanted = set(subjects)
        keys = [key for key in keys if subject_of(key) in wanted]
    return keys


def evaluate_predictions(predictions: Predictions, keys=None, subjects=None,
                         source: str = "predictions") -> dict:
    """Scores of `predictions` (optionally only `keys` and/or `subjects`) against their own
    ground truth.

    Returns {"actions": {action: {"mpjpe", "p_mpjpe", "accel", "frames", "sequences"}},
    "average": {metric: mean over actions}, "frame_weighted": {metric: mean over frames},
    "num_actions", "num_sequences", "num_frames", "units"}.
    """
    keys = _select_keys(predictions, keys, subjects)
    if not keys:
        raise EvaluationError(f"{source}: no sequences to evaluate")
    pooled: dict[str, dict[str, list]] = {}
    for key in keys:
        if key not in predictions.sequences:
            raise EvaluationError(f"{source}: no sequence '{key}'")
        seq = predictions.sequences[key]
        if seq.ground_truth_3d is None:
            raise EvaluationError(f"{source}: sequence '{key}' has no ground_truth_3d; "
                                  f"cannot evaluate without ground truth")
        errors = sequence_errors(seq.pose_3d, seq.ground_truth_3d)
        bucket = pooled.setdefault(action_of(key), {name: [] for name in METRICS + ("keys",)})
        for name in METRICS:
            bucket[name].append(errors[name])
        bucket["keys"].append(key)
    actions = {}
    for action in sorted(pooled):
        bucket = pooled[action]
        values = {name: np.concatenate(bucket[name]) for name in METRICS}
        actions[action] = {name: (float(values[name].mean()) if values[name].size else None)
                           for name in METRICS}
        actions[action]["frames"] = int(values["mpjpe"].size)
        actions[action]["sequences"] = len(bucket["keys"])
    every = {name: np.concatenate([np.concatenate(pooled[a][name]) for a in pooled])
             for name in METRICS}
    average = {}
    for name in METRICS:
        per_action = [entry[name] for entry in actions.values() if entry[name] is not None]
        average[name] = float(np.mean(per_action)) if per_action else None
    return {
        "actions": actions,
        "average": average,
        "frame_weighted": {name: (float(every[name].mean()) if every[name].size else None)
                           for name in METRICS},
        "num_actions": len(actions),
        "num_sequences": len(keys),
        "num_frames": int(every["mpjpe"].size),
        "units": dict(UNITS),
    }


def shared_keys(predictions: list[Predictions], sources: list[str], subjects=None) -> list[str]:
    """Sequence keys present in every file (first file's order), checked to share the same
    ground truth. Raises EvaluationError naming the file and key when they do not."""
    keys = [key for key in _select_keys(predictions[0], subjects=subjects)
            if all(key in other.sequences for other in predictions[1:])]
    if not keys:
        raise EvaluationError(f"no sequence is present in all of {', '.join(sources)}"
                              + (f" for subjects {list(subjects)}" if subjects else ""))
    for key in keys:
        reference = predictions[0].sequences[key].ground_truth_3d
        if reference is None:
            raise EvaluationError(f"{sources[0]}: sequence '{key}' has no ground_truth_3d; "
                                  f"cannot evaluate without ground truth")
        for other, source in zip(predictions[1:], sources[1:]):
            truth = other.sequences[key].ground_truth_3d
            if truth is None:
                raise EvaluationError(f"{source}: sequence '{key}' has no ground_truth_3d; "
                                      f"cannot evaluate without ground truth")
            if truth.shape != reference.shape:
                raise EvaluationError(
                    f"{source}: sequence '{key}' ground_truth_3d has shape {truth.shape}, "
                    f"but {sources[0]} has {reference.shape}: the files disagree on ground truth")
            if not np.allclose(truth, reference, rtol=0, atol=GROUND_TRUTH_ATOL):
                worst = float(np.abs(truth - reference).max())
                raise EvaluationError(
                    f"{source}: sequence '{key}' ground_truth_3d differs from {sources[0]} "
                    f"by up to {worst * 1000:.3g} mm: the files disagree on ground truth")
    return keys


def compare_predictions(predictions: list[Predictions], labels: list[str],
                        sources: list[str] | None = None, subjects=None) -> dict:
    """Evaluate several files on the sequences they all share.

    Returns {"labels": [...], "sequences": [...keys...], "results": {label: evaluate dict}}.
    """
    if not predictions:
        raise EvaluationError("no predictions to evaluate")
    if len(labels) != len(predictions):
        raise EvaluationError(f"{len(labels)} labels for {len(predictions)} files")
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"labels must be distinct, got {labels}")
    sources = list(sources) if sources is not None else list(labels)
    keys = shared_keys(predictions, sources, subjects)
    results = {label: evaluate_predictions(pred, keys=keys, source=source)
               for pred, label, source in zip(predictions, labels, sources)}
    return {"labels": list(labels), "sequences": keys, "results": results}


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown_table(comparison: dict, metrics=METRICS) -> str:
    """A markdown table: one row per action, then the per-action and frame-weighted averages;
    one column per (metric, file). Accepts `compare_predictions`' output, or a single
    `evaluate_predictions` result."""
    if "results" not in comparison:  # a single evaluate_predictions result
        comparison = {"labels": [""], "results": {"": comparison}}
    labels = comparison["labels"]
    results = [comparison["results"][label] for label in labels]
    columns = [(name, label) for name in metrics for label in labels]
    titles = [f"{METRIC_TITLES[name]} {label}".strip() for name, label in columns]
    header = "| Action | Frames | " + " | ".join(titles) + " |"
    rule = "|---|---:|" + "---:|" * len(columns)
    rows = [header, rule]
    first = results[0]
    for action, entry in first["actions"].items():
        cells = [_cell(comparison["results"][label]["actions"][action][name])
                 for name, label in columns]
        rows.append(f"| {action} | {entry['frames']} | " + " | ".join(cells) + " |")
    for title, field in ((f"**Average** ({first['num_actions']} actions)", "average"),
                         ("Average over frames", "frame_weighted")):
        cells = [_cell(comparison["results"][label][field][name]) for name, label in columns]
        rows.append(f"| {title} | {first['num_frames']} | " + " | ".join(cells) + " |")
    units = ", ".join(f"{METRIC_TITLES[name]} in {UNITS[name]}" for name in metrics)
    return "\n".join(rows) + f"\n\n{units}.\n"
