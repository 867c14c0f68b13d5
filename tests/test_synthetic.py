"""Generated data: shapes, determinism, plausibility, camera geometry and the error's size."""

import numpy as np
import pytest

from d3p_model.data.synthetic import ACTIONS, make_synthetic_predictions, synthetic_motion
from d3p_model.evaluate.metrics import mpjpe
from d3p_model.skeleton import H36M17_BONES


def bone_lengths(poses):
    return np.stack([np.linalg.norm(poses[:, j] - poses[:, p], axis=-1) for p, j in H36M17_BONES],
                    axis=1)


def test_motion_shape_determinism_and_rigid_bones():
    motion = synthetic_motion(120, seed=3, action="Walking", subject="SYN2")
    assert motion.shape == (120, 17, 3)
    assert np.array_equal(motion, synthetic_motion(120, seed=3, action="Walking", subject="SYN2"))
    assert not np.allclose(motion, synthetic_motion(120, seed=4, action="Walking", subject="SYN2"))
    lengths = bone_lengths(motion)
    assert np.allclose(lengths, lengths[0], atol=1e-9)  # a skeleton: bones never stretch
    assert np.all((lengths > 0.08) & (lengths < 0.6))
    height = motion[:, 10, 2] - np.minimum(motion[:, 3, 2], motion[:, 6, 2])
    assert 1.4 < height.mean() < 2.0  # a standing adult, z up
    # walking moves the root and turns; it also swings the limbs
    assert np.ptp(motion[:, 0, :2], axis=0).max() > 0.5
    assert np.ptp(motion[:, 3, 0] - motion[:, 0, 0]) > 0.2 or np.ptp(motion[:, 3, 1] - motion[:, 0, 1]) > 0.2
    sitting = synthetic_motion(120, seed=3, action="Sitting", subject="SYN2")
    assert sitting[:, 0, 2].mean() < motion[:, 0, 2].mean() - 0.2


def test_predictions_shapes_keys_and_labels():
    predictions = make_synthetic_predictions(num_sequences=5, num_frames=40, seed=1,
                                             subjects=["SYN1", "SYN2"], num_cameras=2)
    assert len(predictions) == 10
    assert "SYN1/Walking 1/cam1" in predictions.sequences
    assert "SYN1/Directions 1/cam0" in predictions.sequences
    assert "SYN2/Eating 1/cam0" not in predictions.sequences  # 5 motions: W, W, D, D, E
    assert "SYN1/Eating 1/cam0" in predictions.sequences
    assert predictions.meta["synthetic"] is True and "not Human3.6M" in predictions.meta["note"]
    for seq in predictions.sequences.values():
        assert seq.keypoints_2d.shape == (40, 17, 2) and seq.pose_3d.shape == (40, 17, 3)
        assert seq.ground_truth_3d.shape == (40, 17, 3) and seq.pose_3d.dtype == np.float32
        assert np.all(seq.pose_3d[:, 0] == 0) and np.all(seq.ground_truth_3d[:, 0] == 0)
        assert np.all((seq.keypoints_2d > 0) & (seq.keypoints_2d < 1000))  # person in view
    many = make_synthetic_predictions(num_sequences=15, num_frames=5)
    assert {key.split("/")[1][:-2] for key in many.sequences} == set(ACTIONS)


def test_projection_matches_ground_truth_geometry():
    # Bone lengths of the camera-frame ground truth equal the world motion's: R is a rotation.
    predictions = make_synthetic_predictions(num_sequences=1, num_frames=30, seed=2)
    seq = predictions.sequences["SYN1/Walking 1/cam0"]
    world = synthetic_motion(30, seed=2 * 1_000_003, action="Walking", subject="SYN1")
    assert np.allclose(bone_lengths(seq.ground_truth_3d), bone_lengths(world), atol=1e-5)
    # 2D differences of an upright body: head above feet in the image (y down).
    assert np.all(seq.keypoints_2d[:, 10, 1] < seq.keypoints_2d[:, 3, 1])


def test_determinism_and_seed_dependence():
    a = make_synthetic_predictions(seed=7, num_frames=50)
    b = make_synthetic_predictions(seed=7, num_frames=50)
    c = make_synthetic_predictions(seed=8, num_frames=50)
    for key in a.sequences:
        assert np.array_equal(a.sequences[key].pose_3d, b.sequences[key].pose_3d)
        assert np.array_equal(a.sequences[key].keypoints_2d, b.sequences[key].keypoints_2d)
        assert not np.allclose(a.sequences[key].pose_3d, c.sequences[key].pose_3d)


@pytest.mark.parametrize("error_scale", [0.5, 1.0, 2.0])
def test_error_size_scales_and_is_lifter_like(error_scale):
    predictions = make_synthetic_predictions(num_sequences=8, num_frames=200, seed=0,
                                             error_scale=error_scale)
    errors = [mpjpe(s.pose_3d, s.ground_truth_3d) * 1000 for s in predictions.sequences.values()]
    assert 40 * error_scale <= np.mean(errors) <= 80 * error_scale


def test_error_depends_on_the_condition_and_is_temporally_correlated():
    predictions = make_synthetic_predictions(num_sequences=6, num_frames=200, seed=0)
    gt = np.concatenate([s.ground_truth_3d for s in predictions.sequences.values()])
    error = np.concatenate([s.pose_3d - s.ground_truth_3d for s in predictions.sequences.values()])
    # Depth compression: joints in front of the body's mean depth come out too far, etc.
    depth = gt[..., 2] - gt[..., 2].mean(axis=1, keepdims=True)
    assert np.corrcoef(depth[:, 1:].ravel(), error[:, 1:, 2].ravel())[0, 1] < -0.3
    # Consecutive frames' errors are strongly correlated (drift), but not identical (jitter).
    seq_error = next(iter(predictions.sequences.values()))
    e = (seq_error.pose_3d - seq_error.ground_truth_3d)[:, 1:].reshape(200, -1)
    lag1 = np.mean([np.corrcoef(e[:-1, i], e[1:, i])[0, 1] for i in range(e.shape[1])])
    assert 0.5 < lag1 < 0.99


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_synthetic_predictions(num_sequences=0)
    with pytest.raises(ValueError, match="'/'"):
        make_synthetic_predictions(subjects=["a/b"])
    with pytest.raises(ValueError):
        synthetic_motion(0)
