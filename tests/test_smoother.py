"""The Savitzky-Golay reference refiner: smoothing, edges, tuning on training subjects, CLI."""

import json

import numpy as np
import pytest

from d3p_model.cli import main as d3p_main
from d3p_model.data.predictions import load_predictions, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.evaluate.report import EvaluationError, evaluate_predictions
from d3p_model.evaluate.smoother import smooth_predictions, smooth_sequence, tune


def test_polynomial_motion_is_kept_exactly_including_edges():
    t = np.arange(40, dtype=np.float64)[:, None, None]
    poses = np.ones((40, 17, 3)) * (0.1 + 0.02 * t - 0.001 * t ** 2)
    # mode="interp" fits the edge windows too: a quadratic passes through order 2 untouched.
    assert np.allclose(smooth_sequence(poses, 11, 2), poses, atol=1e-10)
    # ...but not through order 1 (the fit would bend a curve): the filter does something.
    assert not np.allclose(smooth_sequence(poses, 11, 1), poses, atol=1e-4)


def test_jitter_is_reduced_and_shape_dtype_root_kept():
    rng = np.random.default_rng(0)
    clean = np.sin(np.linspace(0, 3, 100))[:, None, None] * rng.normal(0, 0.2, (1, 17, 3))
    clean[:, 0] = 0
    noisy = (clean + rng.normal(0, 0.02, clean.shape)).astype(np.float32)
    noisy[:, 0] = 0
    smoothed = smooth_sequence(noisy, 15, 2)
    assert smoothed.shape == noisy.shape and smoothed.dtype == np.float32
    assert np.all(smoothed[:, 0] == 0)
    before = np.abs(noisy - clean).mean()
    assert np.abs(smoothed - clean).mean() < 0.6 * before


def test_short_sequences_and_bad_parameters():
    poses = np.random.default_rng(1).normal(size=(6, 17, 3))
    assert smooth_sequence(poses, 21, 2).shape == poses.shape  # window shrunk to 5
    assert np.array_equal(smooth_sequence(poses[:2], 21, 2), poses[:2])  # too short: unchanged
    with pytest.raises(ValueError, match="odd"):
        smooth_sequence(poses, 10, 2)
    with pytest.raises(ValueError, match="order"):
        smooth_sequence(poses, 5, 5)


def test_smoother_reduces_error_on_generated_data_and_tuning_is_sane():
    train = make_synthetic_predictions(num_sequences=6, num_frames=150, seed=1,
                                       subjects=["SYN1", "SYN2"])
    test = make_synthetic_predictions(num_sequences=4, num_frames=150, seed=2, subjects=["SYN3"])
    result = tune([train], windows=(3, 5, 9, 15, 25, 41, 81), orders=(1, 2, 3), progress=False)
    assert len(result["grid"]) == 20  # 7 x 3 minus (3, 3): order must be < window
    assert result["mpjpe_mm"] < result["mpjpe_before_mm"]
    assert result["mpjpe_mm"] == min(entry["mpjpe_mm"] for entry in result["grid"])
    # Jitter (per frame) is removed by a window of a few frames; the drift (~0.3 s) must
    # not be chased with huge windows that flatten the motion itself.
    assert 5 <= result["window"] <= 41 and result["order"] < result["window"]
    before = evaluate_predictions(test)["average"]
    after = evaluate_predictions(smooth_predictions(test, result["window"], result["order"]))
    assert after["average"]["mpjpe"] < before["mpjpe"] - 0.5
    assert after["average"]["accel"] < 0.3 * before["accel"]


def test_tuning_refuses_test_subjects():
    test = make_synthetic_predictions(num_sequences=1, num_frames=30, subjects=["S9"])
    with pytest.raises(EvaluationError, match="training subjects only"):
        tune([test], progress=False)
    assert tune([test], windows=(5,), orders=(2,), allow_test_subjects=True,
                progress=False)["window"] == 5


def test_tuning_on_every_kth_sequence():
    train = make_synthetic_predictions(num_sequences=5, num_frames=40, subjects=["SYN1"])
    every = tune([train], windows=(5, 9), orders=(1,), progress=False)
    half = tune([train], windows=(5, 9), orders=(1,), progress=False, sequence_stride=2)
    assert (every["num_sequences"], every["num_frames"]) == (5, 200)
    assert (half["num_sequences"], half["num_frames"]) == (3, 120)
    assert half["mpjpe_before_mm"] != every["mpjpe_before_mm"]
    with pytest.raises(ValueError, match="sequence_stride"):
        tune([train], sequence_stride=0, progress=False)


def test_cli_tune_then_apply(tmp_path, capsys):
    train, test = tmp_path / "train.npz", tmp_path / "test.npz"
    save_predictions(train, make_synthetic_predictions(num_sequences=3, num_frames=80, seed=3,
                                                       subjects=["S1", "S5", "S6"]))
    save_predictions(test, make_synthetic_predictions(num_sequences=2, num_frames=80, seed=4,
                                                      subjects=["S9", "S11"]))
    params, out = tmp_path / "params.json", tmp_path / "smoothed.npz"
    assert d3p_main(["smooth", "tune", str(train), "-o", str(params),
                     "--windows", "5", "9", "15", "--orders", "1", "2"]) == 0
    chosen = json.loads(params.read_text())
    assert (chosen["window"], chosen["order"]) in {(5, 1), (5, 2), (9, 1), (9, 2), (15, 1), (15, 2)}
    assert chosen["tuned_on"] == [str(train)] and chosen["num_frames"] == 240
    assert d3p_main(["smooth", "apply", str(test), "-o", str(out), "--params", str(params)]) == 0
    smoothed, original = load_predictions(out), load_predictions(test)
    step = smoothed.meta["refinements"][-1]
    assert step["method"] == "savitzky-golay" and step["window"] == chosen["window"]
    assert smoothed.meta["synthetic"] is True  # provenance kept
    for key, seq in original.items():
        assert np.array_equal(smoothed.sequences[key].ground_truth_3d, seq.ground_truth_3d)
        assert np.array_equal(smoothed.sequences[key].keypoints_2d, seq.keypoints_2d)
        assert not np.array_equal(smoothed.sequences[key].pose_3d, seq.pose_3d)
    # tuning on test subjects and half-given parameters are refused with a message
    assert d3p_main(["smooth", "tune", str(test), "-o", str(params)]) == 1
    assert d3p_main(["smooth", "apply", str(test), "-o", str(out), "--window", "9"]) == 1
    assert "--window and --order" in capsys.readouterr().err
