"""`d3p refine IN.npz -o OUT.npz`: same format out, only pose_3d changed, windows as asked."""

import numpy as np
import pytest
import torch

from d3p_model.cli import main as d3p
from d3p_model.cnd import ConditionalNoiseModel
from d3p_model.data.predictions import load_predictions, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
from d3p_model.refiner import D3PRefiner

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("refine")
    predictions = make_synthetic_predictions(num_sequences=3, num_frames=50, seed=5)
    # sequences of odd lengths, one shorter than the window, and optional arrays
    key = next(iter(predictions.sequences))
    seq = predictions.sequences[key]
    seq.confidence_2d = np.full(seq.keypoints_2d.shape[:2], 0.9, dtype=np.float32)
    short = make_synthetic_predictions(num_sequences=1, num_frames=4, seed=6, subjects=["X"])
    predictions.sequences.update(short.sequences)
    save_predictions(root / "in.npz", predictions)
    # an untrained but valid refiner: this file tests I/O, test_train.py tests accuracy
    torch.manual_seed(0)
    train = [(s.keypoints_normalised(), s.pose_3d, s.ground_truth_3d)
             for _, s in predictions.items()]
    refiner = D3PRefiner(PoseDenoiser(DenoiserConfig(window=9, depth=1, width=16)),
                         ConditionalNoiseModel.fit_sequences(train),
                         joint_uncertainty=np.full(17, 0.04))
    refiner.save(root / "model")
    return root, predictions, refiner


def test_refine_writes_the_same_format(files):
    root, predictions, refiner = files
    assert d3p(["refine", str(root / "in.npz"), "-o", str(root / "out.npz"),
                "--model", str(root / "model"), "--no-progress"]) == 0
    out = load_predictions(root / "out.npz")
    assert set(out.sequences) == set(predictions.sequences)
    assert out.meta["refined_by"]["model"] == str(root / "model")
    assert out.meta["refined_by"]["stride"] == 9 and out.meta["refined_by"]["steps"] == 2
    assert out.meta["refined_by"]["correction_threshold_mm"] == 0.0
    assert out.meta["synthetic"] is True          # provenance of the input carried over
    for key, seq in predictions.items():
        got = out.sequences[key]
        for name in ("keypoints_2d", "image_size", "ground_truth_3d", "confidence_2d"):
            expected = getattr(seq, name)
            if expected is None:
                assert getattr(got, name) is None
            else:
                np.testing.assert_array_equal(getattr(got, name), expected)
        expected_pose = refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d)
        np.testing.assert_allclose(got.pose_3d, expected_pose, atol=1e-6)
        assert not np.allclose(got.pose_3d, seq.pose_3d)


def test_overlapping_windows_and_steps(files):
    root, predictions, refiner = files
    assert d3p(["refine", str(root / "in.npz"), "-o", str(root / "out3.npz"), "--model",
                str(root / "model"), "--stride", "3", "--steps", "1", "--batch-size", "2",
                "--no-progress"]) == 0
    out = load_predictions(root / "out3.npz")
    assert out.meta["refined_by"]["stride"] == 3 and out.meta["refined_by"]["steps"] == 1
    key, seq = next(iter(predictions.items()))
    expected = refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d, stride=3,
                                       steps=1)
    np.testing.assert_allclose(out.sequences[key].pose_3d, expected, atol=1e-6)


def test_errors_are_reported(files, tmp_path, capsys):
    root, _, _ = files
    assert d3p(["refine", str(root / "in.npz"), "-o", str(tmp_path / "o.npz"),
                "--model", str(tmp_path / "missing")]) == 2
    assert "missing: model directory does not exist" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"junk")
    assert d3p(["refine", str(tmp_path / "bad.npz"), "-o", str(tmp_path / "o.npz"),
                "--model", str(root / "model")]) == 2
    assert "bad.npz" in capsys.readouterr().err
    assert d3p(["refine", str(root / "in.npz"), "-o", str(tmp_path / "o.npz"),
                "--model", str(root / "model"), "--stride", "10"]) == 2
    assert "--stride must be in 1..9" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists()


def test_the_models_correction_threshold_is_applied_and_recorded(files, tmp_path):
    """A model.json with correction_threshold_mm: `d3p refine` applies it and says so."""
    root, predictions, refiner = files
    threshold = 0.02
    refiner.correction_threshold = threshold
    try:
        refiner.save(tmp_path / "model")
    finally:
        refiner.correction_threshold = 0.0
    assert d3p(["refine", str(root / "in.npz"), "-o", str(tmp_path / "out.npz"),
                "--model", str(tmp_path / "model"), "--no-progress"]) == 0
    out = load_predictions(tmp_path / "out.npz")
    assert out.meta["refined_by"]["correction_threshold_mm"] == pytest.approx(20.0)
    for key, seq in predictions.items():
        expected = refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d,
                                           correction_threshold=threshold)
        np.testing.assert_allclose(out.sequences[key].pose_3d, expected, atol=1e-6)
        moved = np.linalg.norm(out.sequences[key].pose_3d - seq.pose_3d, axis=-1)
        raw = np.linalg.norm(refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d)
                             - seq.pose_3d, axis=-1)
        # soft threshold: every joint moves by its raw correction less the threshold
        np.testing.assert_allclose(moved, np.maximum(raw - threshold, 0.0), atol=1e-5)
        assert (raw > threshold).any() and (raw < threshold).any()   # both sides are tested


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_the_correction_threshold_can_be_overridden(files, tmp_path, backend):
    """--correction-threshold replaces the model's (here 20 mm) for one run, on either
    backend; 0 turns it off, a negative or NaN value is refused."""
    root, predictions, refiner = files
    refiner.correction_threshold = 0.02
    try:
        refiner.save(tmp_path / "model")
    finally:
        refiner.correction_threshold = 0.0
    for mm in (0.0, 5.0):
        out_path = tmp_path / f"out_{mm:g}.npz"
        assert d3p(["refine", str(root / "in.npz"), "-o", str(out_path), "--backend", backend,
                    "--model", str(tmp_path / "model"), "--correction-threshold", str(mm),
                    "--no-progress"]) == 0
        out = load_predictions(out_path)
        assert out.meta["refined_by"]["correction_threshold_mm"] == pytest.approx(mm)
        for key, seq in predictions.items():
            expected = refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d,
                                               correction_threshold=mm / 1000.0)
            np.testing.assert_allclose(out.sequences[key].pose_3d, expected, atol=1e-5)
    for bad in ("-1", "nan"):
        assert d3p(["refine", str(root / "in.npz"), "-o", str(tmp_path / "bad.npz"),
                    "--model", str(tmp_path / "model"), "--correction-threshold", bad]) == 2
    assert not (tmp_path / "bad.npz").exists()
