"""Pose metrics against hand-computed cases, and the per-action report / `d3p evaluate`."""

import json

import numpy as np
import pytest

from d3p_model.cli import main as d3p_main
from d3p_model.data.predictions import Predictions, Sequence, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.evaluate.metrics import (acceleration_error, acceleration_error_per_frame, mpjpe,
                                        mpjpe_per_frame, p_mpjpe, p_mpjpe_per_frame,
                                        procrustes_align)
from d3p_model.evaluate.report import (EvaluationError, compare_predictions,
                                       evaluate_predictions, markdown_table)


def rotation(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k  # Rodrigues


@pytest.fixture
def poses():
    return np.random.default_rng(0).normal(0, 0.3, (6, 17, 3))


# --- MPJPE ---------------------------------------------------------------------------------

def test_constant_offset_gives_its_length(poses):
    offset = np.array([0.03, -0.04, 0.12])  # |d| = 0.13
    assert mpjpe(poses + offset, poses) == pytest.approx(0.13)
    assert np.allclose(mpjpe_per_frame(poses + offset, poses), 0.13)


def test_two_joint_example_by_hand():
    gt = np.array([[[0, 0, 0], [1, 0, 0]]], float)
    pred = np.array([[[0, 0, 0], [1, 3, 4]]], float)  # joint 1 is 5 away, joint 0 exact
    assert mpjpe(pred, gt) == pytest.approx(2.5)
    # P-MPJPE by hand: both centred pairs are 1-D segments; the best similarity maps pred's
    # segment onto gt's exactly (rotate, shrink 5.099 -> 1), so the error is 0.
    assert p_mpjpe(pred, gt) == pytest.approx(0.0, abs=1e-9)


def test_p_mpjpe_by_hand_with_scale():
    # A cross in the xy-plane; the prediction doubles the x-arm and collapses the y-arm.
    gt = np.array([[[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]], float)
    pred = np.array([[[2, 0, 0], [-2, 0, 0], [0, 0, 0], [0, 0, 0]]], float)
    assert mpjpe(pred, gt) == pytest.approx(1.0)
    # A = sum gt_i pred_i^T = diag(4, 0, 0), |pred|^2 = 8: scale 1/2, no rotation, so the
    # x-arm lands exactly and the y-arm joints stay 1 away: (0 + 0 + 1 + 1) / 4.
    assert p_mpjpe(pred, gt) == pytest.approx(0.5)
    assert np.allclose(procrustes_align(pred, gt)[0, :2], gt[0, :2])


def test_shape_mismatch_is_an_error(poses):
    with pytest.raises(ValueError, match="shape"):
        mpjpe(poses[:, :16], poses)
    with pytest.raises(ValueError, match="J, 3"):
        mpjpe(poses[..., :2], poses[..., :2])


# --- P-MPJPE -------------------------------------------------------------------------------

def test_similarity_transform_gives_zero_p_mpjpe(poses):
    transforms = [rotation([1, 2, 3], 0.7 + 0.3 * f) for f in range(len(poses))]
    pred = np.stack([1.3 * pose @ r.T + np.array([0.5, -0.2, 2.0]) * f
                     for f, (pose, r) in enumerate(zip(poses, transforms))])
    assert mpjpe(pred, poses) > 0.1
    assert p_mpjpe(pred, poses) == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(procrustes_align(pred, poses), poses, atol=1e-9)


def test_reflection_is_not_aligned_away(poses):
    mirrored = poses * np.array([-1.0, 1.0, 1.0])
    # An improper "rotation" would map the mirror image back exactly; a proper one cannot.
    assert p_mpjpe(mirrored, poses) > 0.05
    # Yet a planar pose mirrored in its own plane IS a rotation (by pi about an in-plane
    # axis) of itself, so its P-MPJPE is 0: the sign fix must not break proper cases.
    planar = poses.copy()
    planar[..., 2] = 0
    flipped = planar * np.array([1.0, -1.0, 1.0])
    assert p_mpjpe(flipped, planar) == pytest.approx(0.0, abs=1e-9)


def test_p_mpjpe_never_exceeds_mpjpe_and_is_per_frame(poses):
    noisy = poses + np.random.default_rng(1).normal(0, 0.05, poses.shape)
    per_frame = p_mpjpe_per_frame(noisy, poses)
    assert per_frame.shape == (len(poses),)
    assert np.all(per_frame <= mpjpe_per_frame(noisy, poses) + 1e-12)
    assert p_mpjpe(noisy, poses) == pytest.approx(per_frame.mean())


def test_collapsed_prediction_maps_to_the_mean(poses):
    collapsed = np.zeros_like(poses)
    aligned = procrustes_align(collapsed, poses)
    assert np.allclose(aligned, poses.mean(axis=1, keepdims=True))


# --- acceleration error -------------------------------------------------------------------

def test_constant_velocity_error_has_no_acceleration_error(poses):
    frames = np.arange(10)[:, None, None]
    gt = np.repeat(poses[:1], 10, axis=0)
    pred = gt + 0.02 * frames * np.array([1.0, 2.0, -1.0]) + 0.3
    assert acceleration_error(pred, gt) == pytest.approx(0.0, abs=1e-12)
    assert mpjpe(pred, gt) > 0


def test_quadratic_error_has_known_acceleration_error(poses):
    # error(t) = a t^2 / 2 * d (|d| = 1) has second difference a * d at every frame.
    frames = np.arange(12)[:, None, None]
    direction = np.array([0.0, 0.6, 0.8])
    gt = np.repeat(poses[:1], 12, axis=0)
    pred = gt + 0.5 * 0.004 * frames ** 2 * direction
    per_frame = acceleration_error_per_frame(pred, gt)
    assert per_frame.shape == (10,)
    assert np.allclose(per_frame, 0.004)
    assert acceleration_error(pred, gt) == pytest.approx(0.004)


def test_acceleration_error_needs_three_frames(poses):
    with pytest.raises(ValueError, match="F >= 3"):
        acceleration_error(poses[:2], poses[:2])


# --- report and CLI -----------------------------------------------------------------------

def offset_copy(predictions, offset):
    """Same ground truth; pose = ground truth + `offset` on every non-root joint."""
    sequences = {}
    for key, seq in predictions.items():
        pose = seq.ground_truth_3d.copy()
        pose[:, 1:] += np.asarray(offset, np.float32)
        sequences[key] = Sequence(seq.keypoints_2d, seq.image_size, pose, seq.ground_truth_3d)
    return Predictions(sequences, {"estimator": "offset"})


def test_report_averages_per_action_then_over_actions():
    base = make_synthetic_predictions(num_sequences=3, num_frames=20, subjects=["A"],
                                      actions=["Eating", "Walking"])
    # Eating 1 and Eating 2 (20 frames each) get 10 mm, Walking 1 gets 40 mm.
    sequences = {}
    for key, seq in base.items():
        length = 0.04 if "Walking" in key else 0.01
        pose = seq.ground_truth_3d.copy()
        pose[:, 1:, 0] += length
        sequences[key] = Sequence(seq.keypoints_2d, seq.image_size, pose, seq.ground_truth_3d)
    result = evaluate_predictions(Predictions(sequences))
    scale = 16 / 17  # the root joint has no error
    assert set(result["actions"]) == {"Eating", "Walking"}
    assert result["actions"]["Eating"]["frames"] == 40
    assert result["actions"]["Eating"]["mpjpe"] == pytest.approx(10 * scale, rel=1e-4)
    assert result["average"]["mpjpe"] == pytest.approx(25 * scale, rel=1e-4)
    assert result["frame_weighted"]["mpjpe"] == pytest.approx(20 * scale, rel=1e-4)
    assert result["average"]["accel"] == pytest.approx(0.0, abs=1e-3)


def test_evaluate_cli_writes_json_and_markdown(tmp_path, capsys):
    truth = make_synthetic_predictions(num_sequences=4, num_frames=30, subjects=["S9", "S11"])
    lifter, offset = tmp_path / "lifter.npz", tmp_path / "offset.npz"
    save_predictions(lifter, truth)
    save_predictions(offset, offset_copy(truth, [0.0, 0.03, 0.04]))  # 50 mm on 16 joints
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    code = d3p_main(["evaluate", str(lifter), str(offset), "--labels", "lifter", "offset",
                     "--json", str(out_json), "--markdown", str(out_md)])
    assert code == 0
    result = json.loads(out_json.read_text())
    assert result["labels"] == ["lifter", "offset"]
    assert set(result["results"]["offset"]["actions"]) == {"Walking", "Directions"}
    assert result["results"]["offset"]["average"]["mpjpe"] == pytest.approx(50 * 16 / 17, rel=1e-4)
    # Procrustes removes most of a near-translation (only the root does not move); a
    # constant error has no acceleration.
    assert result["results"]["offset"]["average"]["p_mpjpe"] < 10.0
    assert result["results"]["offset"]["average"]["accel"] < 1e-3
    assert 30 < result["results"]["lifter"]["average"]["mpjpe"] < 100
    table = out_md.read_text()
    assert table == capsys.readouterr().out
    assert "| Walking | 60 |" in table and "MPJPE offset" in table and "47.1" in table
    # --subjects keeps only those sequences
    assert d3p_main(["evaluate", str(lifter), "--subjects", "S11", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["sequences"] == ["S11/Walking 1/cam0",
                                                            "S11/Directions 1/cam0"]


def test_files_must_have_and_agree_on_ground_truth(tmp_path, capsys):
    truth = make_synthetic_predictions(num_sequences=2, num_frames=10)
    other = make_synthetic_predictions(num_sequences=2, num_frames=10, seed=5)
    with pytest.raises(EvaluationError, match="disagree on ground truth"):
        compare_predictions([truth, other], ["a", "b"])
    no_truth = Predictions({k: Sequence(s.keypoints_2d, s.image_size, s.pose_3d)
                            for k, s in truth.items()})
    with pytest.raises(EvaluationError, match="no ground_truth_3d"):
        compare_predictions([truth, no_truth], ["a", "b"])
    with pytest.raises(EvaluationError, match="no ground_truth_3d"):
        evaluate_predictions(no_truth)
    renamed = Predictions({"X/" + k: s for k, s in truth.items()})
    with pytest.raises(EvaluationError, match="no sequence is present in all"):
        compare_predictions([truth, renamed], ["a", "b"])
    path = tmp_path / "no_truth.npz"
    save_predictions(path, no_truth)
    assert d3p_main(["evaluate", str(path)]) == 1
    assert "no ground_truth_3d" in capsys.readouterr().err


def test_markdown_table_of_a_single_result():
    result = evaluate_predictions(make_synthetic_predictions(num_sequences=2, num_frames=10))
    table = markdown_table(result)
    assert table.splitlines()[0] == "| Action | Frames | MPJPE | P-MPJPE | Accel |"
    assert "**Average** (2 actions)" in table


def test_rigid_decomposition_recovers_a_known_rotation_and_scale():
    """A prediction that is the ground truth turned by 20 degrees and shrunk by 10%: the
    decomposition reports exactly that, P-MPJPE 0 and MPJPE > 0; the truth itself gives 0,
    0 degrees and size 1."""
    from d3p_model.data.synthetic import make_synthetic_predictions
    from d3p_model.evaluate.decomposition import decomposition_table, rigid_decomposition
    from d3p_model.evaluate.metrics import rotation_angle
    from d3p_model.evaluate.report import evaluate_predictions

    predictions = make_synthetic_predictions(num_sequences=3, num_frames=30, seed=4)
    angle = np.radians(20.0)
    turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                     [-np.sin(angle), 0, np.cos(angle)]])
    assert rotation_angle(turn) == pytest.approx(angle)
    for seq in predictions.sequences.values():
        truth = seq.ground_truth_3d - seq.ground_truth_3d[:, :1]
        centre = truth.mean(axis=1, keepdims=True)
        seq.pose_3d = 0.9 * (truth - centre) @ turn.T + centre
    result = rigid_decomposition(predictions)
    average = {**result["average"], **evaluate_predictions(predictions)["average"]}
    assert average["rotation_deg"] == pytest.approx(20.0, abs=1e-6)
    assert average["size_ratio"] == pytest.approx(0.9, abs=1e-6)  # float32 poses
    assert average["p_mpjpe"] == pytest.approx(0.0, abs=1e-4) and average["mpjpe"] > 10
    for seq in predictions.sequences.values():
        seq.pose_3d = seq.ground_truth_3d.copy()
    exact = {**rigid_decomposition(predictions)["average"],
             **evaluate_predictions(predictions)["average"]}
    assert exact["mpjpe"] == pytest.approx(0, abs=1e-9)
    assert exact["rotation_deg"] == pytest.approx(0, abs=1e-3)
    assert exact["size_ratio"] == pytest.approx(1, abs=1e-6)
    table = decomposition_table({"lifter": result, "truth": rigid_decomposition(predictions)})
    assert "| **Average** | " in table and "20.0 | 0.900 |" in table
