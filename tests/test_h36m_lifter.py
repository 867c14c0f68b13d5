"""Human3.6M loading and the base lifter, on a small GENERATED folder in the H36M layout."""

import json

import numpy as np
import pytest
import torch

from d3p_model.data import h36m
from d3p_model.data.predictions import load_predictions, save_predictions
from d3p_model.data.synthetic import synthetic_motion
from d3p_model.lifter import predict, train
from d3p_model.skeleton import MPII16_JOINTS, H36M17_JOINTS, mpii16_to_h36m17

CAM_IDS = h36m.CAMERAS


def _camera(yaw, distortion=0.0):
    c, s = np.cos(yaw), np.sin(yaw)
    # world z up; camera looks horizontally at the origin from 4 m away
    forward = np.array([-c, -s, 0.0])
    right = np.cross(forward, [0, 0, 1.0])
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])
    return {"R": R.tolist(), "T_mm": (np.array([4000 * c, 4000 * s, 1000.0])).tolist(),
            "f": [1150.0, 1150.0], "c": [500.0, 500.0], "k": [distortion, 0.0, 0.0],
            "p": [0.0, 0.0], "width": 1000, "height": 1000}


@pytest.fixture(scope="module")
def fake_h36m(tmp_path_factory):
    root = tmp_path_factory.mktemp("h36m")
    subjects = ["S1", "S5", "S9"]
    cams = {s: {cid: _camera(i * np.pi / 2 + 0.3) for i, cid in enumerate(CAM_IDS)} for s in subjects}
    (root / "cameras.json").write_text(json.dumps(cams))
    positions, detections = {}, {}
    loaded = None
    for si, subject in enumerate(subjects):
        for ai, action in enumerate(["Walking 1", "Eating"]):
            world = synthetic_motion(120, seed=10 * si + ai, action=action.split()[0], subject=subject)
            world = world - world[:1, :1] * np.array([1, 1, 0])  # start near the origin
            positions[f"{subject}/{action}"] = world.astype(np.float32)
    np.savez(root / "positions_3d.npz", **positions)
    cameras = h36m.load_cameras(root)
    to_mpii = [H36M17_JOINTS.index(n) if n in H36M17_JOINTS else None for n in
               ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
                "pelvis", "thorax", "neck", "head", "right_wrist", "right_elbow",
                "right_shoulder", "left_shoulder", "left_elbow", "left_wrist"]]
    for key, world in positions.items():
        subject = key.split("/")[0]
        for cid in CAM_IDS:
            if key == "S9/Eating" and cid == CAM_IDS[0]:
                continue  # like S11 Directions: no detections for one camera
            pix = cameras[subject][cid].project(cameras[subject][cid].world_to_camera(world))
            detections[f"{key}/{cid}"] = np.round(pix[:, to_mpii]).astype(np.int16)
    np.savez(root / "detections_2d_sh.npz", **detections)
    return root


def test_data_dir_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("D3P_DATA", str(tmp_path))
    monkeypatch.setattr(h36m, "Path", lambda *a: tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="D3P_DATA"):
        h36m.data_dir(None)


def test_projection_pinhole_and_distortion():
    cam = h36m.Camera(R=np.eye(3), center=np.zeros(3), f=np.array([1000.0, 1000.0]),
                      c=np.array([500.0, 400.0]), k=np.zeros(3), p=np.zeros(2), width=1000,
                      height=800)
    point = np.array([[0.2, -0.1, 2.0]])
    np.testing.assert_allclose(cam.project(point), [[600.0, 350.0]], atol=1e-4)
    distorted = h36m.Camera(**{**cam.__dict__, "k": np.array([0.1, 0.0, 0.0])})
    r2 = 0.1 ** 2 + 0.05 ** 2  # radial distortion scales the normalised point by 1 + k1 r^2
    np.testing.assert_allclose(distorted.project(point),
                               [[500 + 1000 * 0.1 * (1 + 0.1 * r2), 400 - 1000 * 0.05 * (1 + 0.1 * r2)]],
                               atol=1e-3)


def test_mpii_to_h36m_mapping_by_name():
    h36m_pose = np.random.default_rng(0).normal(size=(17, 2)).astype(np.float32)
    name_map = {"upper_neck": "neck", "head_top": "head"}
    mpii = np.stack([h36m_pose[H36M17_JOINTS.index(name_map.get(n, n))] for n in MPII16_JOINTS])
    back = mpii16_to_h36m17(mpii)
    spine = H36M17_JOINTS.index("spine")
    others = [j for j in range(17) if j != spine]
    np.testing.assert_allclose(back[others], h36m_pose[others])
    np.testing.assert_allclose(back[spine], 0.5 * (h36m_pose[0] + h36m_pose[8]))


def test_load_sequences_gt_and_detections(fake_h36m):
    gt = h36m.load_sequences("gt2d", ["S9"], fake_h36m)
    sh = h36m.load_sequences("sh2d", ["S9"], fake_h36m)
    assert len(gt) == 8 and len(sh) == 7  # one camera without detections is skipped
    for seq in gt:
        assert seq.keypoints_2d.shape == (120, 17, 2) and seq.ground_truth_3d.shape == (120, 17, 3)
        np.testing.assert_array_equal(seq.ground_truth_3d[:, 0], 0)  # root-relative
        # bone lengths are those of the world motion (rotation + translation only)
        assert 0.3 < np.linalg.norm(seq.ground_truth_3d[0, 2] - seq.ground_truth_3d[0, 1]) < 0.6
    by_key = {s.key: s for s in gt}
    for seq in sh:  # detections are the rounded projection, spine = pelvis/thorax midpoint
        diff = np.abs(seq.keypoints_2d - by_key[seq.key].keypoints_2d)
        assert np.delete(diff, 7, axis=1).max() <= 0.5 + 1e-4
    with pytest.raises(ValueError, match="setting"):
        h36m.load_sequences("cpn", ["S9"], fake_h36m)


def test_lifter_trains_resumes_and_predicts_held_out(fake_h36m, tmp_path):
    torch.set_num_threads(1)
    config = {"setting": "gt2d", "window": 9,
              "model": {"depth": 1, "width": 16, "heads": 2, "mlp_ratio": 2.0},
              "train": {"steps": 60, "batch_size": 16, "lr": 3e-3, "lr_final": 1e-3,
                        "start_stride": 2, "flip": True, "seed": 0},
              "folds": {"heldout_S1": ["S5"], "heldout_S5": ["S1"], "all": ["S1", "S5"]}}
    models = tmp_path / "models"
    for fold in config["folds"]:
        train.train_fold(config, fold, models / "gt2d" / fold, fake_h36m, command="test")
    log = json.loads((models / "gt2d" / "all" / "train_log.json").read_text())
    assert log[-1]["mpjpe_mm"] < log[0]["mpjpe_mm"]  # it learns
    # resume: more steps continue from the checkpoint instead of starting over
    config["train"]["steps"] = 70
    train.train_fold(config, "all", models / "gt2d" / "all", fake_h36m, resume=True)
    assert json.loads((models / "gt2d" / "all" / "train_log.json").read_text())[-1]["step"] == 70

    assert predict.fold_for_subject(models, "gt2d", "S1") == "heldout_S1"
    assert predict.fold_for_subject(models, "gt2d", "S9") == "all"
    held_out = predict.predict_split("gt2d", ["S1", "S5"], fake_h36m, models)
    assert held_out.meta["folds"] == {"S1": "heldout_S1", "S5": "heldout_S5"}
    path = tmp_path / "train_heldout.npz"
    save_predictions(path, held_out)
    loaded = load_predictions(path)
    assert len(loaded) == 16
    seq = next(iter(loaded.sequences.values()))
    assert seq.pose_3d.shape == seq.ground_truth_3d.shape == (120, 17, 3)
    np.testing.assert_allclose(seq.pose_3d[:, 0], 0, atol=1e-6)
    assert np.isfinite(seq.pose_3d).all()


def test_demo_sample_is_generated_and_lifted_by_the_shipped_lifter():
    from d3p_model.data.demo_sample import make_demo_sample
    from d3p_model.evaluate.metrics import mpjpe

    torch.set_num_threads(1)
    sample = make_demo_sample(num_people=2, num_frames=60)
    assert "not Human3.6M" in sample.meta["note"]
    assert len(sample) == 2 and not any(k.startswith(("S9", "S11")) for k in sample.sequences)
    for seq in sample.sequences.values():
        assert seq.pose_3d.shape == seq.ground_truth_3d.shape == (60, 17, 3)
        assert np.isfinite(seq.pose_3d).all()
        # a real lifter's estimate: close to, but not equal to, the truth
        assert 0.01 < mpjpe(seq.pose_3d, seq.ground_truth_3d) < 0.5
