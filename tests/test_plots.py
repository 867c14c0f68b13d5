"""d3p plot: error histograms, skeleton and trajectory figures, on small generated data."""

import copy

import numpy as np
import pytest

from d3p_model.cli import main as d3p
from d3p_model.data.predictions import Predictions, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.evaluate.plots import (PlotError, axis_error_statistics, default_frames,
                                      error_histogram_figure, skeleton_figure,
                                      trajectory_figure)
from d3p_model.evaluate.report import EvaluationError
from d3p_model.skeleton import H36M17_JOINTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def lifter():
    return make_synthetic_predictions(num_sequences=3, num_frames=40, seed=5, subjects=["SYN7"])


def shifted(predictions, offset_m, joints=slice(1, None)):
    """A copy whose pose_3d is the ground truth plus `offset_m` on the given joints."""
    out = {}
    for key, seq in predictions.items():
        seq = copy.copy(seq)
        pose = seq.ground_truth_3d.copy()
        pose[:, joints] += np.asarray(offset_m, dtype=np.float32)
        seq.pose_3d = pose
        out[key] = seq
    return Predictions(out, dict(predictions.meta))


def test_statistics_of_a_known_offset(lifter):
    # +10 mm in x and -4 mm in z on every non-root joint: each axis histogram is one spike.
    offset = shifted(lifter, [0.010, 0.0, -0.004])
    # 1 mm bins centred on whole millimetres: float32 rounding cannot straddle an edge
    stats = axis_error_statistics([lifter, offset], ["lifter", "offset"], bins=41,
                                  limit_mm=20.5)
    entry = stats["files"]["offset"]
    frames = sum(seq.num_frames for seq in lifter.sequences.values())
    assert entry["count"] == frames * 16
    np.testing.assert_allclose(entry["mean"], [10.0, 0.0, -4.0], atol=1e-3)
    np.testing.assert_allclose(entry["std"], 0.0, atol=1e-2)
    np.testing.assert_allclose(entry["per_joint_mpjpe"][1:], np.hypot(10.0, 4.0), atol=1e-3)
    assert entry["per_joint_mpjpe"][0] == 0.0
    edges = stats["edges"]
    for axis, value in enumerate([10.0, 0.0, -4.0]):
        counts = entry["counts"][axis]
        assert counts.sum() == entry["count"]
        (bins,) = np.nonzero(counts)
        assert len(bins) == 1 and edges[axis, bins[0]] <= value < edges[axis, bins[0] + 1]
    # the lifter's real spread: nonzero std, some mass outside a tight range
    tight = axis_error_statistics([lifter], ["lifter"], bins=10, limit_mm=5.0)
    assert np.all(tight["files"]["lifter"]["outside"] > 0.1)
    assert np.all(stats["files"]["lifter"]["std"] > 5.0)


def test_default_range_per_axis_covers_most_errors(lifter):
    stats = axis_error_statistics([lifter], ["lifter"])
    limits = stats["limit_mm"]
    assert np.all(limits > 0) and np.all(stats["files"]["lifter"]["outside"] < 0.02)
    # each axis its own range: the 99.5th percentile of that axis's |error| (every 5th frame)
    sample = np.concatenate([
        np.abs((seq.pose_3d - seq.pose_3d[:, :1]) - (seq.ground_truth_3d
                                                     - seq.ground_truth_3d[:, :1]))[::5, 1:]
        .reshape(-1, 3) for seq in lifter.sequences.values()]) * 1000
    np.testing.assert_allclose(limits, np.percentile(sample, 99.5, axis=0), rtol=1e-4)
    assert len(set(np.round(limits))) == 3
    np.testing.assert_allclose(stats["edges"][:, 0], -limits)


def test_histogram_figure_has_three_axes_and_bars(lifter):
    offset = shifted(lifter, [0.0, 0.005, 0.0])
    figure, _ = error_histogram_figure([lifter, offset], ["lifter", "offset"])
    assert len(figure.axes) == 4  # x, y, z histograms + per-joint bars
    legend = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert legend[0].startswith("lifter (σ") and legend[1] == "offset (σ 0.0)"
    figure, _ = error_histogram_figure([lifter], ["lifter"], per_joint=False)
    assert len(figure.axes) == 3


def test_skeleton_figure_panels_and_errors(lifter):
    key = sorted(lifter.sequences)[0]
    offset = shifted(lifter, [0.0, 0.0, 0.020])
    figure = skeleton_figure([lifter, offset], ["lifter", "offset"], key, frames=[0, 7, 39])
    assert len(figure.axes) == 6
    titles = {ax.get_title() for ax in figure.axes}
    # the +20 mm file: 16 of 17 joints off by 20 mm, in every frame
    for frame in (0, 7, 39):
        assert f"offset, frame {frame}\nMPJPE {20 * 16 / 17:.0f} mm" in titles
    assert len({title for title in titles if title.startswith("lifter, frame")}) == 3
    with pytest.raises(PlotError, match="out of range"):
        skeleton_figure([lifter], ["lifter"], key, frames=[40])
    with pytest.raises(PlotError, match="no sequence"):
        skeleton_figure([lifter], ["lifter"], "SYN7/Nothing 1/cam0")


def test_files_with_different_ground_truth_are_refused(lifter):
    key = sorted(lifter.sequences)[0]
    other = shifted(lifter, [0.0, 0.0, 0.0])
    other.sequences[key].ground_truth_3d = other.sequences[key].ground_truth_3d + 0.01
    with pytest.raises(EvaluationError, match="disagree on ground truth"):
        skeleton_figure([lifter, other], ["a", "b"], key)


def test_trajectory_draws_the_joint(lifter):
    key = sorted(lifter.sequences)[1]
    figure = trajectory_figure([lifter], ["lifter"], key, joint="left_wrist", first=5, count=20)
    joint = H36M17_JOINTS.index("left_wrist")
    truth = lifter.sequences[key].ground_truth_3d
    pose = lifter.sequences[key].pose_3d
    for axis in range(3):
        ground, predicted = figure.axes[axis].lines[:2]
        np.testing.assert_array_equal(ground.get_xdata(), np.arange(5, 25))
        np.testing.assert_allclose(ground.get_ydata(),
                                   1000 * (truth[5:25, joint, axis] - truth[5:25, 0, axis]),
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(predicted.get_ydata(),
                                   1000 * (pose[5:25, joint, axis] - pose[5:25, 0, axis]),
                                   rtol=1e-5, atol=1e-3)
    with pytest.raises(PlotError, match="unknown joint"):
        trajectory_figure([lifter], ["lifter"], key, joint="tail")


def test_default_frames():
    assert default_frames(101) == [10, 37, 63, 90]
    assert default_frames(2, count=4) == [0, 1]
    with pytest.raises(PlotError):
        default_frames(0)


def test_cli_writes_small_pngs_and_reports_errors(tmp_path, lifter, capsys):
    before, after = tmp_path / "lifter.npz", tmp_path / "after.npz"
    save_predictions(before, lifter)
    save_predictions(after, shifted(lifter, [0.0, 0.002, 0.0]))
    key = sorted(lifter.sequences)[0]
    runs = {
        "hist.png": ["hist", str(before), str(after), "--labels", "lifter", "refined",
                     "--bins", "30"],
        "skeletons.png": ["skeletons", str(before), str(after), "--key", key,
                          "--frames", "0", "20"],
        "trajectory.png": ["trajectory", str(before), str(after), "--key", key,
                           "--joint", "head"],
    }
    for name, argv in runs.items():
        output = tmp_path / "figures" / name
        assert d3p(["plot", *argv, "-o", str(output)]) == 0
        data = output.read_bytes()
        assert data.startswith(PNG_MAGIC) and 5_000 < len(data) < 300_000
    assert d3p(["plot", "hist", str(before), "--labels", "a", "b", "-o",
                str(tmp_path / "x.png")]) == 1
    assert "2 labels for 1 files" in capsys.readouterr().err
    assert d3p(["plot", "skeletons", str(before), "--key", "nope", "-o",
                str(tmp_path / "x.png")]) == 1
    assert "no sequence 'nope'" in capsys.readouterr().err
    assert d3p(["plot", "hist", str(tmp_path / "missing.npz"), "-o",
                str(tmp_path / "x.png")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
