"""Figures of refinement results (matplotlib, Agg; no display needed).

- `error_histogram_figure`: the error distribution before/after (as D3PRefiner's Fig. 4):
  per axis (x, y, z of the camera frame), histograms of the signed joint errors in mm,
  pooled over the non-root joints and all frames, one outline per file, overlaid; optionally
  a row of per-joint MPJPE bars.
- `skeleton_figure`: a sequence's skeletons at a few frames (as Fig. 5): one column per
  file, the file's pose in colour (left limbs blue, right red) over the ground truth (grey).
- `trajectory_figure`: one joint's x, y, z over time for ground truth and every file (shows
  jitter and lag).

`d3p plot hist|skeletons|trajectory FILE.npz [FILE2.npz ...] --labels ... -o fig.png`.
Every file must carry `ground_truth_3d` for the sequences drawn, and the files must agree on
it (as for `d3p evaluate`). Poses are made root-relative first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..data.predictions import Predictions, PredictionsFormatError, load_predictions
from ..skeleton import H36M17_BONES, H36M17_JOINTS, H36M17_LEFT, H36M17_RIGHT, NUM_JOINTS, ROOT
from .report import EvaluationError, shared_keys

AXES = ("x", "y", "z")
NON_ROOT = [j for j in range(NUM_JOINTS) if j != ROOT]
DEFAULT_DPI = 90
# One colour per file, in order (lifter, smoother, refiner, ...); colour-blind safe.
FILE_COLOURS = ("#d55e00", "#999999", "#0072b2", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")
LEFT_COLOUR, RIGHT_COLOUR, CENTRE_COLOUR, TRUTH_COLOUR = "#1f5fbf", "#cc2a2a", "#333333", "#b0b0b0"
# Histograms stream over sequences; the axis range comes from every n-th frame of file 1.
RANGE_SAMPLE_STRIDE = 5
RANGE_PERCENTILE = 99.5


class PlotError(ValueError):
    """Input that cannot be drawn (unknown key, frames out of range, ...)."""


def _figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend needed
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(figure, path, dpi: int = DEFAULT_DPI) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    return path


def _check_inputs(predictions: list[Predictions], labels: list[str]) -> None:
    if not predictions:
        raise PlotError("no predictions to plot")
    if len(labels) != len(predictions):
        raise PlotError(f"{len(labels)} labels for {len(predictions)} files")


def _root_relative(poses: np.ndarray) -> np.ndarray:
    poses = np.asarray(poses, dtype=np.float64)
    return poses - poses[:, ROOT:ROOT + 1]


def _errors_mm(predictions: Predictions, key: str) -> np.ndarray:
    """(F, 16, 3) signed non-root joint errors of one sequence, mm."""
    seq = predictions.sequences[key]
    error = _root_relative(seq.pose_3d) - _root_relative(seq.ground_truth_3d)
    return error[:, NON_ROOT] * 1000.0


def axis_error_statistics(predictions: list[Predictions], labels: list[str], keys=None,
                          subjects=None, bins: int = 80, limit_mm: float | None = None) -> dict:
    """Histograms of the per-axis signed joint errors (mm), streamed over sequences.

    Returns {"edges": (3, bins+1), "limit_mm": (3,), "keys", "files": {label: {"counts":
    (3, bins), "mean": (3,), "std": (3,), "outside": (3,) fraction beyond the range,
    "per_joint_mpjpe": (17,) mm, "count": values per axis}}}. Axis a spans +-limit_mm[a]:
    the given limit for every axis, or by default the 99.5th percentile of that axis's
    |error| in the first file (from every 5th frame): depth errors are often several times
    wider than x/y errors, and one shared range would squash the x/y histograms.
    """
    _check_inputs(predictions, labels)
    if bins < 2:
        raise PlotError(f"bins must be >= 2, got {bins}")
    keys = list(keys) if keys is not None else shared_keys(predictions, labels, subjects)
    if not keys:
        raise PlotError("no sequences to plot")
    if limit_mm is None:
        sample = np.concatenate([np.abs(_errors_mm(predictions[0], key)[::RANGE_SAMPLE_STRIDE])
                                 .reshape(-1, 3) for key in keys])
        limits = np.percentile(sample, RANGE_PERCENTILE, axis=0)
    else:
        limits = np.full(3, float(limit_mm))
    if not np.all(limits > 0):
        raise PlotError(f"the histogram range must be positive, got {limits} mm")
    edges = np.stack([np.linspace(-limit, limit, bins + 1) for limit in limits])
    files = {}
    for pred, label in zip(predictions, labels):
        counts = np.zeros((3, bins), dtype=np.int64)
        total = np.zeros(3)
        squares = np.zeros(3)
        outside = np.zeros(3)
        joint_sum = np.zeros(NUM_JOINTS)
        count = 0
        for key in keys:
            error = _errors_mm(pred, key)
            flat = error.reshape(-1, 3)
            for axis in range(3):
                counts[axis] += np.histogram(flat[:, axis], edges[axis])[0]
                outside[axis] += np.count_nonzero(np.abs(flat[:, axis]) > limits[axis])
            total += flat.sum(axis=0)
            squares += (flat ** 2).sum(axis=0)
            joint_sum[NON_ROOT] += np.linalg.norm(error, axis=-1).sum(axis=0)
            count += flat.shape[0]
        frames = count // len(NON_ROOT)
        mean = total / count
        files[label] = {"counts": counts, "mean": mean,
                        "std": np.sqrt(np.maximum(squares / count - mean ** 2, 0.0)),
                        "outside": outside / count, "per_joint_mpjpe": joint_sum / frames,
                        "count": count}
    return {"edges": edges, "limit_mm": limits, "keys": keys, "files": files}


def error_histogram_figure(predictions: list[Predictions], labels: list[str], keys=None,
                           subjects=None, bins: int = 80, limit_mm: float | None = None,
                           per_joint: bool = True, title: str | None = None,
                           statistics: dict | None = None):
    """Fig. 4 style: per-axis error histograms of each file overlaid (density), with the
    standard deviation per axis in the legend; below, per-joint MPJPE bars (per_joint).
    Returns (figure, statistics)."""
    stats = statistics or axis_error_statistics(predictions, labels, keys, subjects, bins,
                                                limit_mm)
    figure = _figure(11.0, 6.4 if per_joint else 3.4)
    grid = figure.add_gridspec(2 if per_joint else 1, 3)
    for axis, name in enumerate(AXES):
        ax = figure.add_subplot(grid[0, axis])
        edges = stats["edges"][axis]
        width = edges[1] - edges[0]
        for index, label in enumerate(labels):
            entry = stats["files"][label]
            density = entry["counts"][axis] / (entry["count"] * width)
            ax.stairs(density, edges, color=FILE_COLOURS[index % len(FILE_COLOURS)],
                      linewidth=1.4, label=f"{label} (σ {entry['std'][axis]:.1f})")
        ax.axvline(0.0, color="black", linewidth=0.5, alpha=0.5)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_xlabel(f"{name} error (mm)")
        if axis == 0:
            ax.set_ylabel("density (1/mm)")
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    if per_joint:
        ax = figure.add_subplot(grid[1, :])
        joints = np.arange(len(NON_ROOT))
        bar = 0.8 / len(labels)
        for index, label in enumerate(labels):
            values = stats["files"][label]["per_joint_mpjpe"][NON_ROOT]
            ax.bar(joints + (index - (len(labels) - 1) / 2) * bar, values, bar,
                   color=FILE_COLOURS[index % len(FILE_COLOURS)], label=label)
        ax.set_xticks(joints, [H36M17_JOINTS[j].replace("_", " ") for j in NON_ROOT],
                      rotation=40, ha="right", fontsize=7)
        ax.set_ylabel("MPJPE (mm)")
        ax.legend(fontsize=7, ncols=len(labels), frameon=False)
    frames = stats["files"][labels[0]]["count"] // len(NON_ROOT)
    figure.suptitle((title + " - " if title else "")
                    + f"joint errors, {len(stats['keys'])} sequences, {frames} frames, "
                      f"non-root joints", fontsize=10)
    return figure, stats


def _check_sequence(predictions: list[Predictions], labels: list[str], key: str) -> int:
    for pred, label in zip(predictions, labels):
        if key not in pred.sequences:
            raise PlotError(f"{label}: no sequence {key!r}")
    shared_keys([_only(pred, key) for pred in predictions], labels)  # same ground truth
    return predictions[0].sequences[key].num_frames


def _only(predictions: Predictions, key: str) -> Predictions:
    return Predictions({key: predictions.sequences[key]}, predictions.meta)


def _display(pose: np.ndarray) -> np.ndarray:
    """Camera frame (x right, y down, z forward) -> plot axes (x, depth, up)."""
    return np.stack([pose[..., 0], pose[..., 2], -pose[..., 1]], axis=-1)


def _draw_skeleton(ax, pose: np.ndarray, truth: bool) -> None:
    for parent, child in H36M17_BONES:
        if truth:
            colour, width, style = TRUTH_COLOUR, 2.6, "-"
        elif child in H36M17_LEFT:
            colour, width, style = LEFT_COLOUR, 1.6, "-"
        elif child in H36M17_RIGHT:
            colour, width, style = RIGHT_COLOUR, 1.6, "-"
        else:
            colour, width, style = CENTRE_COLOUR, 1.6, "-"
        segment = pose[[parent, child]]
        ax.plot(segment[:, 0], segment[:, 1], segment[:, 2], style, color=colour,
                linewidth=width, solid_capstyle="round")


def default_frames(num_frames: int, count: int = 4) -> list[int]:
    """`count` frames evenly spread over the middle 80% of a sequence."""
    if num_frames < 1:
        raise PlotError("a sequence without frames")
    count = min(count, num_frames)
    first, last = int(0.1 * (num_frames - 1)), int(round(0.9 * (num_frames - 1)))
    return sorted({int(round(v)) for v in np.linspace(first, last, count)})


def skeleton_figure(predictions: list[Predictions], labels: list[str], key: str,
                    frames=None, title: str | None = None, elevation: float = 12.0,
                    azimuth: float = -65.0):
    """Fig. 5 style: rows = files, columns = frames; each panel the file's skeleton (left
    blue, right red) over the ground truth (thick grey), with that frame's MPJPE."""
    import mpl_toolkits.mplot3d  # noqa: F401  (registers the 3d projection)

    _check_inputs(predictions, labels)
    num_frames = _check_sequence(predictions, labels, key)
    frames = default_frames(num_frames) if frames is None else [int(f) for f in frames]
    if not frames:
        raise PlotError("no frames to draw")
    bad = [f for f in frames if not 0 <= f < num_frames]
    if bad:
        raise PlotError(f"frames {bad} out of range: {key!r} has {num_frames} frames")
    truth = _display(_root_relative(predictions[0].sequences[key].ground_truth_3d))
    poses = [_display(_root_relative(p.sequences[key].pose_3d)) for p in predictions]
    # One cube per frame (column), around the ground truth, so sizes compare down a column.
    figure = _figure(2.4 * len(frames) + 0.3, 2.5 * len(labels) + 0.5)
    for column, frame in enumerate(frames):
        reference = truth[frame]
        centre = 0.5 * (reference.max(axis=0) + reference.min(axis=0))
        half = 0.5 * max(float(np.ptp(reference, axis=0).max()), 0.5)
        for row, (label, pose) in enumerate(zip(labels, poses)):
            ax = figure.add_subplot(len(labels), len(frames), row * len(frames) + column + 1,
                                    projection="3d")
            _draw_skeleton(ax, reference, truth=True)
            _draw_skeleton(ax, pose[frame], truth=False)
            error = 1000.0 * np.linalg.norm(pose[frame] - reference, axis=-1).mean()
            ax.set_title(f"{label}, frame {frame}\nMPJPE {error:.0f} mm", fontsize=8)
            for setter, index in ((ax.set_xlim, 0), (ax.set_ylim, 1), (ax.set_zlim, 2)):
                setter(centre[index] - half, centre[index] + half)
            ax.set_box_aspect((1, 1, 1), zoom=1.3)
            ax.view_init(elev=elevation, azim=azimuth)
            for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
                axis.set_ticklabels([])
                axis.set_pane_color((0.97, 0.97, 0.97, 1.0))
            ax.tick_params(length=0)
    figure.suptitle((title + ": " if title else "") + f"{key}\n(grey: ground truth; "
                    "blue/red: left/right limbs)", fontsize=9)
    return figure


def trajectory_figure(predictions: list[Predictions], labels: list[str], key: str,
                      joint: str = "right_wrist", first: int = 0, count: int | None = None,
                      title: str | None = None):
    """One joint's root-relative x, y, z (mm) over frames first..first+count for the ground
    truth (black) and every file."""
    _check_inputs(predictions, labels)
    if joint not in H36M17_JOINTS:
        raise PlotError(f"unknown joint {joint!r}; one of {', '.join(H36M17_JOINTS)}")
    index = H36M17_JOINTS.index(joint)
    num_frames = _check_sequence(predictions, labels, key)
    last = num_frames if count is None else min(num_frames, first + int(count))
    if not 0 <= first < last:
        raise PlotError(f"frames {first}..{last} out of range: {key!r} has {num_frames} frames")
    span = np.arange(first, last)
    truth = _root_relative(predictions[0].sequences[key].ground_truth_3d)[span, index] * 1000
    figure = _figure(9.0, 5.6)
    for axis, name in enumerate(AXES):
        ax = figure.add_subplot(3, 1, axis + 1)
        ax.plot(span, truth[:, axis], color="black", linewidth=1.8, label="ground truth")
        for number, (pred, label) in enumerate(zip(predictions, labels)):
            values = _root_relative(pred.sequences[key].pose_3d)[span, index, axis] * 1000
            ax.plot(span, values, color=FILE_COLOURS[number % len(FILE_COLOURS)],
                    linewidth=1.1, label=label)
        ax.set_ylabel(f"{name} (mm)")
        if axis == 0:
            ax.legend(fontsize=7, ncols=len(labels) + 1, frameon=False, loc="lower left",
                      bbox_to_anchor=(0.0, 1.0))
    ax.set_xlabel("frame")
    figure.suptitle((title + ": " if title else "") + f"{key}, {joint.replace('_', ' ')}, "
                    "root-relative", fontsize=9)
    return figure


# ------------------------------------------------------------------------------ CLI
def add_arguments(parser) -> None:
    commands = parser.add_subparsers(dest="figure", required=True,
                                     metavar="{hist,skeletons,trajectory}")
    hist = commands.add_parser("hist", help="per-axis error histograms (+ per-joint MPJPE)")
    skeletons = commands.add_parser("skeletons", help="3D skeletons of one sequence at a few "
                                                      "frames, one column per file")
    trajectory = commands.add_parser("trajectory", help="one joint's coordinates over time")
    for sub in (hist, skeletons, trajectory):
        sub.add_argument("files", nargs="+", metavar="FILE.npz",
                         help="prediction files with ground truth (e.g. lifter, refined)")
        sub.add_argument("--labels", nargs="+", metavar="LABEL",
                         help="one label per file (default: the file names)")
        sub.add_argument("-o", "--output", required=True, metavar="fig.png")
        sub.add_argument("--title")
        sub.add_argument("--dpi", type=int, default=DEFAULT_DPI)
    hist.add_argument("--subjects", nargs="+", metavar="SUBJECT",
                      help="only these subjects (first key component), e.g. S9 S11")
    hist.add_argument("--bins", type=int, default=80)
    hist.add_argument("--limit", type=float, metavar="MM",
                      help="histogram range +-MM on every axis (default: per axis, the "
                           "99.5th percentile of file 1's |error|)")
    hist.add_argument("--no-per-joint", action="store_true", help="omit the per-joint bars")
    for sub in (skeletons, trajectory):
        sub.add_argument("--key", required=True, help="the sequence, e.g. 'S9/Walking 1/54138969'")
    skeletons.add_argument("--frames", nargs="+", type=int, metavar="F",
                           help="frame indices (default: 4 spread over the sequence)")
    trajectory.add_argument("--joint", default="right_wrist", choices=H36M17_JOINTS)
    trajectory.add_argument("--first", type=int, default=0, metavar="F")
    trajectory.add_argument("--count", type=int, metavar="N", help="frames (default: all)")


def _labels(args) -> list[str]:
    if args.labels:
        return list(args.labels)
    stems = [Path(name).stem for name in args.files]
    return stems if len(set(stems)) == len(stems) else [str(name) for name in args.files]


def main(args) -> int:
    try:
        labels = _labels(args)
        if len(labels) != len(args.files):
            raise PlotError(f"{len(labels)} labels for {len(args.files)} files")
        predictions = [load_predictions(name) for name in args.files]
        if args.figure == "hist":
            figure, _ = error_histogram_figure(predictions, labels, subjects=args.subjects,
                                               bins=args.bins, limit_mm=args.limit,
                                               per_joint=not args.no_per_joint,
                                               title=args.title)
        elif args.figure == "skeletons":
            figure = skeleton_figure(predictions, labels, args.key, args.frames, args.title)
        else:
            figure = trajectory_figure(predictions, labels, args.key, args.joint, args.first,
                                       args.count, args.title)
    except (PredictionsFormatError, EvaluationError, PlotError) as err:
        print(f"d3p plot {args.figure}: {err}", file=sys.stderr)
        return 1
    path = save_figure(figure, args.output, args.dpi)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0
