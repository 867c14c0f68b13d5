"""Human3.6M loading and the base lifter, on a small GENERATED folder in the H36M layout."""

import json

import numpy as np
import pytest
import torch
import yaml

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


def _tiny_config(steps=60):
    return {"setting": "gt2d",
            "model": {"radius": 2, "dilation": 2, "width": 32, "blocks": 1, "dropout": 0.0,
                      "flip_test": True},
            "train": {"steps": steps, "batch_size": 32, "lr": 3e-3, "lr_final": 1e-4,
                      "warmup_steps": 5, "frame_stride": 2, "flip": True, "seed": 0,
                      "log_every": 10, "eval_every": 30},
            "folds": {"heldout_S1": {"train": ["S5"], "predict": ["S1"]},
                      "heldout_S5": {"train": ["S1"], "predict": ["S5"]},
                      "all": {"train": ["S1", "S5"], "predict": ["S9"]}}}


def test_lifter_loss_falls_and_the_fold_is_held_out(fake_h36m, tmp_path):
    torch.set_num_threads(1)
    config = _tiny_config()
    models = tmp_path / "models"
    for fold in config["folds"]:
        train.train_fold(config, fold, models / "gt2d" / fold, fake_h36m, command="test",
                         progress=False)
    log = json.loads((models / "gt2d" / "all" / "train_log.json").read_text())
    assert log[-1]["train_mpjpe_mm"] < 0.7 * log[0]["train_mpjpe_mm"]  # it learns
    assert log[-1]["heldout_mpjpe_mm"] < log[2]["heldout_mpjpe_mm"]
    saved = yaml.safe_load((models / "gt2d" / "heldout_S1" / "config.yaml").read_text())
    assert saved["train_subjects"] == ["S5"] and saved["predict_subjects"] == ["S1"]

    assert predict.fold_for_subject(models, "gt2d", "S1") == "heldout_S1"
    assert predict.fold_for_subject(models, "gt2d", "S9") == "all"
    held_out = predict.predict_split("gt2d", ["S1", "S5"], fake_h36m, models)
    path = tmp_path / "train_heldout.npz"
    save_predictions(path, held_out)
    loaded = load_predictions(path)
    # the file says which fold predicted each subject, and what that fold trained on
    assert loaded.meta["folds"] == {"S1": "heldout_S1", "S5": "heldout_S5"}
    for subject, fold in loaded.meta["folds"].items():
        assert subject not in loaded.meta["fold_train_subjects"][fold]
    assert len(loaded) == 16
    seq = loaded.sequences["S1/Walking 1/" + CAM_IDS[0]]
    assert seq.pose_3d.shape == seq.ground_truth_3d.shape == (120, 17, 3)
    np.testing.assert_allclose(seq.pose_3d[:, 0], 0, atol=1e-6)
    assert np.isfinite(seq.pose_3d).all()
    # the prediction is the S1-free fold's, frame by frame
    model = train.load_lifter(models / "gt2d" / "heldout_S1")
    np.testing.assert_allclose(seq.pose_3d, model.lift(seq.keypoints_normalised()), atol=1e-6)

    # in-sample (a pretrained lifter's outputs on its own training subjects): the `all`
    # model for every subject, said so in the file, and closer to the truth than held-out
    in_sample = predict.predict_split("gt2d", ["S1", "S5"], fake_h36m, models, in_sample=True)
    assert in_sample.meta["folds"] == {"S1": "all", "S5": "all"}
    assert in_sample.meta["note"].startswith("in-sample")
    model = train.load_lifter(models / "gt2d" / "all")
    seq = in_sample.sequences["S1/Walking 1/" + CAM_IDS[0]]
    np.testing.assert_allclose(seq.pose_3d, model.lift(seq.keypoints_normalised()), atol=1e-6)

    def mpjpe(p):
        return np.mean([np.linalg.norm(s.pose_3d - (s.ground_truth_3d - s.ground_truth_3d[:, :1]),
                                       axis=-1).mean() for s in p.sequences.values()])
    assert mpjpe(in_sample) < mpjpe(held_out)


def test_a_fold_never_trains_on_a_subject_it_predicts(fake_h36m, tmp_path):
    config = _tiny_config()
    config["folds"]["leaky"] = {"train": ["S1", "S5"], "predict": ["S5"]}
    with pytest.raises(train.FoldError, match="S5"):
        train.train_fold(config, "leaky", tmp_path / "leaky", fake_h36m, progress=False)
    # nor does prediction pick a fold that saw the subject
    models = tmp_path / "models" / "gt2d" / "leaky"
    models.mkdir(parents=True)
    (models / "config.yaml").write_text(yaml.safe_dump(
        {**config, "train_subjects": ["S1", "S5"], "predict_subjects": ["S5"]}))
    with pytest.raises(ValueError, match="trained on"):
        predict.fold_for_subject(tmp_path / "models", "gt2d", "S5")
    with pytest.raises(FileNotFoundError, match="predict S1"):
        predict.fold_for_subject(tmp_path / "models", "gt2d", "S1")


def test_killed_run_resumes_where_it_stopped(fake_h36m, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    config = _tiny_config(steps=40)
    whole = train.train_fold(config, "heldout_S1", tmp_path / "whole", fake_h36m,
                             progress=False)
    # the same run, killed after its first checkpoint (taken at step 20) ...
    monkeypatch.setattr(train, "CHECKPOINT_SECONDS", -1.0)   # checkpoint every step
    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 20:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train.train_fold(config, "heldout_S1", tmp_path / "killed", fake_h36m, progress=False)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    # ... and resumed, ends with the weights of the uninterrupted run
    resumed = train.train_fold(config, "heldout_S1", tmp_path / "killed", fake_h36m,
                               resume=True, progress=False)
    a = torch.load(whole / "weights.pt", weights_only=True)
    b = torch.load(resumed / "weights.pt", weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-3 if a[key].is_floating_point() else 0)
    log = json.loads((resumed / "train_log.json").read_text())
    assert [e["step"] for e in log] == [10, 20, 30, 40]


def test_half_precision_weights_lift_as_the_full_precision_model(fake_h36m, tmp_path):
    torch.set_num_threads(1)
    config = _tiny_config(steps=30)
    out = train.train_fold(config, "heldout_S1", tmp_path / "fold", fake_h36m, progress=False)
    full = train.build_model(config)
    state = torch.load(out / "checkpoint.pt", weights_only=True)["model"]
    full.load_state_dict(state)
    half = train.load_lifter(out)
    keypoints = h36m.load_sequences("gt2d", ["S1"], fake_h36m)[0]
    from d3p_model.data.predictions import normalise_screen
    x = normalise_screen(keypoints.keypoints_2d, *keypoints.image_size)
    difference = np.linalg.norm(full.lift(x) - half.lift(x), axis=-1)
    assert 0 < difference.mean() < 2.5e-4   # < 0.25 mm; and the weights really were rounded
    assert difference.max() < 1e-3


def test_lift_mirrors_and_covers_every_frame():
    from d3p_model.lifter.model import WindowMLPLifter
    torch.manual_seed(0)
    model = WindowMLPLifter(radius=2, dilation=3, width=16, blocks=1, flip_test=False).eval()
    assert model.receptive_field == 13 and list(model.offsets) == [-6, -3, 0, 3, 6]
    index = model.window_index(5)
    assert index.shape == (5, 5) and index.min() == 0 and index.max() == 4
    np.testing.assert_array_equal(index[2], [0, 0, 2, 4, 4])   # edges repeated
    keypoints = np.random.default_rng(0).uniform(-1, 1, (7, 17, 2)).astype(np.float32)
    pose = model.lift(keypoints)
    assert pose.shape == (7, 17, 3) and np.all(pose[:, 0] == 0)
    # mirroring twice is the identity; flip-test averaging is symmetric under the mirror
    x = torch.from_numpy(keypoints[None, :5])
    torch.testing.assert_close(model.mirrored(model.mirrored(x)), x)
    model.flip_test = True
    with torch.no_grad():
        torch.testing.assert_close(model.predict(model.mirrored(x)),
                                   model.mirrored(model.predict(x)), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="keypoints_2d"):
        model.lift(keypoints[..., :1])


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


def test_temporal_conv_lifter_trains_and_predicts(fake_h36m, tmp_path):
    """The lifter of another family (the refiner's unseen estimator): 27 consecutive frames
    through dilated convolutions; it learns, saves, reloads and lifts like the base lifter."""
    from d3p_model.lifter.tcn import TemporalConvLifter
    torch.set_num_threads(1)
    model = TemporalConvLifter(blocks=2, width=16)
    assert model.frames == 27 and list(model.offsets) == list(range(-13, 14))
    assert model(torch.zeros(4, 27, 17, 2)).shape == (4, 17, 3)
    # the output depends on the first and last frame of the window too (receptive field 27)
    model.eval()
    x = torch.randn(2, 27, 17, 2)
    for frame in (0, 13, 26):
        moved = x.clone()
        moved[:, frame] += 1.0
        assert not torch.allclose(model(x), model(moved)), frame

    config = _tiny_config(steps=60)
    config["model"] = {"type": "temporal_conv", "blocks": 1, "width": 32, "dropout": 0.0,
                       "flip_test": True}
    out = tmp_path / "tcn" / "gt2d" / "all"
    train.train_fold(config, "all", out, fake_h36m, command="test", progress=False)
    log = json.loads((out / "train_log.json").read_text())
    assert log[-1]["train_mpjpe_mm"] < 0.7 * log[0]["train_mpjpe_mm"]
    loaded = train.load_lifter(out)
    assert isinstance(loaded, TemporalConvLifter) and loaded.frames == 9
    held_out = predict.predict_split("gt2d", ["S9"], fake_h36m, tmp_path / "tcn")
    assert "TemporalConvLifter" in held_out.meta["estimator"]
    with pytest.raises(ValueError, match="unknown lifter type"):
        train.build_model({"model": {"type": "transformer"}})
