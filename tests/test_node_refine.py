"""The refiner node, started as the launch file starts it, refines a generated sequence.

One node process (causal mode) for the module; a second one in lagged mode. Fed over DDS
from this process; checked on /human_pose3d_refined, the markers and /diagnostics.
"""

import json
import shutil

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from conftest import release_domain_id, reserve_domain_id  # noqa: E402
pytest.importorskip("d3p_ros.msg", reason="messages not built (run scripts/setup.sh)")

from d3p_model.data.synthetic import make_synthetic_predictions  # noqa: E402
from d3p_ros.processes import ensure_demo_model  # noqa: E402
from d3p_ros.testing import NodeHarness, all_finite, make_frame, output_people  # noqa: E402

pytestmark = pytest.mark.timeout(600)  # the first test may train the demo model
NS = 1_000_000_000
PERIOD_NS = 20_000_000          # 50 Hz
ROOTS = {1: np.array([0.5, 0.2, 4.0]), 2: np.array([-1.0, 0.1, 6.0])}


@pytest.fixture(scope="module")
def sample():
    """Two GENERATED people (not Human3.6M), 30 frames each (0.6 s at 50 Hz)."""
    preds = make_synthetic_predictions(num_sequences=2, num_frames=30, seed=11, subjects=["SYNT"])
    return [seq for _, seq in preds.items()]


@pytest.fixture(scope="module")
def harness_factory():
    model_dir = ensure_demo_model()
    made, domains = [], []

    def make(name, **overrides):
        # one domain per node: two refiners on one domain would both answer every input
        domains.append(reserve_domain_id())
        h = NodeHarness({"model_dir": str(model_dir), **overrides}, domain_id=domains[-1], name=name)
        made.append(h)
        h.wait_ready()
        return h
    yield make
    for h in made:
        h.close()
    for domain in domains:
        release_domain_id(domain)


def frames_of(sample, start_ns, absolute=False, frame_id="camera_left"):
    frames = []
    for i in range(sample[0].num_frames):
        people = []
        for track_id, seq in zip((1, 2), sample):
            pose = seq.pose_3d[i] + (ROOTS[track_id] if absolute else 0)
            people.append(dict(track_id=track_id, keypoints=seq.keypoints_2d[i], pose=pose,
                               root_relative=not absolute))
        frames.append(make_frame(start_ns + i * PERIOD_NS, people, frame_id=frame_id))
    return frames


def mpjpe(a, b):
    a = a - a[..., :1, :]
    b = b - b[..., :1, :]
    return float(np.linalg.norm(a - b, axis=-1).mean())


def lifter_and_refined_errors(rows, sample, start):
    """Per output skeleton: MPJPE of the lifter's input and of the refined output."""
    before, after = [], []
    for stamp, _, track_id, positions, _, _ in rows:
        i = (stamp - start) // PERIOD_NS
        seq = sample[track_id - 1]
        before.append(mpjpe(seq.pose_3d[i], seq.ground_truth_3d[i]))
        after.append(mpjpe(positions, seq.ground_truth_3d[i]))
    return before, after


@pytest.fixture(scope="module")
def causal_run(harness_factory, sample):
    h = harness_factory("causal")
    start = 1000 * NS
    h.send_lockstep(frames_of(sample, start, absolute=True))
    return h, start


def test_refined_closer_to_ground_truth(causal_run, sample):
    h, start = causal_run
    rows = output_people(h.outputs)
    assert len(rows) == 2 * sample[0].num_frames, h.log()
    before, after = lifter_and_refined_errors(rows, sample, start)
    assert np.mean(after) < 0.9 * np.mean(before), (np.mean(before), np.mean(after))
    assert all_finite(h.outputs)


def test_stamps_frame_ids_and_roots_preserved(causal_run, sample):
    h, start = causal_run
    sent = {start + i * PERIOD_NS for i in range(sample[0].num_frames)}
    for stamp, frame_id, track_id, positions, _, _ in output_people(h.outputs):
        assert stamp in sent
        assert frame_id == "camera_left"
        # absolute input: the root comes back exactly where it was
        np.testing.assert_allclose(positions[0], ROOTS[track_id], atol=1e-5)
    for msg in h.outputs:
        assert all(sk.header.stamp == msg.header.stamp for sk in msg.skeletons)
        assert all(not sk.root_relative for sk in msg.skeletons)


def test_people_kept_apart(causal_run, sample):
    h, start = causal_run
    rows = output_people(h.outputs)
    assert {r[2] for r in rows} == {1, 2}
    for stamp, _, track_id, positions, _, _ in rows:
        i = (stamp - start) // PERIOD_NS
        own = mpjpe(positions, sample[track_id - 1].ground_truth_3d[i])
        other = mpjpe(positions, sample[2 - track_id].ground_truth_3d[i])
        assert own < other


def test_uncertainty_markers_and_diagnostics(causal_run):
    from d3p_model.refiner import D3PRefiner
    h, _ = causal_run
    expected = D3PRefiner.load(ensure_demo_model()).joint_uncertainty
    assert np.all(expected[1:] > 0)   # the root of a root-relative model has no error
    for _, _, _, _, uncertainty, confidence in output_people(h.outputs):
        np.testing.assert_allclose(uncertainty, expected, rtol=1e-6)
        assert confidence.shape == (17,)
    assert h.markers, "no MarkerArray published"
    marker_ids = {(m.ns, m.id) for ma in h.markers for m in ma.markers}
    assert {("d3p_bones", 1), ("d3p_bones", 2), ("d3p_joints", 1)} <= marker_ids
    values = h.counters()
    assert values["active"] == "True" and values["backend"] == "onnx" and values["device"] == "cpu"
    assert int(values["published_skeletons"]) == len(output_people(h.outputs))
    assert int(values["tracks_started"]) == 2
    assert float(values["processing_ms_mean"]) > 0
    assert values["mode"] == "causal" and int(values["window"]) >= 1


@pytest.fixture(scope="module")
def lagged(harness_factory):
    # stride 1: a window for every frame, so that each frame's output comes 3 frames later
    return harness_factory("lagged", mode="lagged", lag_frames=3, stride=1, publish_markers=False,
                           debug_image=True)


def test_lagged_mode_waits_lag_frames(lagged, sample):
    h = lagged
    start = 5000 * NS
    frames = frames_of(sample, start)[:12]
    for i, (msg_2d, msg_3d) in enumerate(frames[:3]):
        h.publish(msg_2d, msg_3d)
    h.spin_for(0.7)
    assert h.outputs == []                      # 3 frames, lag 3: nothing refinable yet
    h.send_lockstep(frames[3:])
    stamps = sorted({r[0] for r in output_people(h.outputs)})
    assert stamps == [start + i * PERIOD_NS for i in range(12 - 3)]
    assert h.counters()["lag_frames"] == "3"


def test_streamed_lagged_mode_publishes_each_frame_once_from_a_window_every_stride(
        harness_factory, sample):
    """lag 4, stride 3 (window 9): one window per person every 3 frames; each frame is
    published once, 4-6 frames after it arrived, the blend of the windows that covered it."""
    h = harness_factory("streamed", mode="lagged", lag_frames=4, stride=3, publish_markers=False)
    start = 7000 * NS
    frames = frames_of(sample, start)
    for msg_2d, msg_3d in frames:
        h.publish(msg_2d, msg_3d)
        h.spin_for(0.03)
    # 30 frames. Person 1 (phase 0): windows end at frames 4, 7, ..., 28, the last publishes
    # frames 22-24; person 2 (phase 1): at 5, 8, ..., 29, up to frame 25
    published = {1: 25, 2: 26}
    assert h.spin_until(lambda: len(output_people(h.outputs)) >= 51, 10), h.log()
    h.spin_for(0.5)
    rows = output_people(h.outputs)
    for track_id, count in published.items():
        stamps = [r[0] for r in rows if r[2] == track_id]
        assert stamps == [start + i * PERIOD_NS for i in range(count)], (track_id, stamps)
    values = h.counters()
    assert values["stride"] == "3" and values["lag_frames"] == "4"
    assert int(values["published_skeletons"]) == 51 and int(values.get("skipped_behind", 0)) == 0
    # the two people's windows are staggered: one person per call, 2 calls per 3 frames
    assert int(values["inference_batches"]) == 2 * len(range(4, 30, 3))
    before, after = lifter_and_refined_errors(rows, sample, start)
    assert np.mean(after) < 0.9 * np.mean(before), (np.mean(before), np.mean(after))
    assert all_finite(h.outputs)


def test_the_models_correction_threshold_limits_what_the_node_publishes(harness_factory,
                                                                        sample, tmp_path):
    """A threshold beyond any correction (model.json) makes the node publish its input: the
    node applies the model's threshold as `d3p refine` does."""
    model_dir = tmp_path / "model"
    shutil.copytree(ensure_demo_model(), model_dir)
    spec = json.loads((model_dir / "model.json").read_text())
    spec["correction_threshold_mm"] = 1e6
    (model_dir / "model.json").write_text(json.dumps(spec))
    h = harness_factory("thresholded", model_dir=str(model_dir), publish_markers=False)
    start = 9000 * NS
    h.send_lockstep(frames_of(sample, start))
    rows = output_people(h.outputs)
    assert len(rows) == 2 * sample[0].num_frames, h.log()
    for stamp, _, track_id, positions, _, _ in rows:
        given = sample[track_id - 1].pose_3d[(stamp - start) // PERIOD_NS]
        np.testing.assert_allclose(positions - positions[:1], given - given[:1], atol=1e-5)
    assert h.counters()["correction_threshold_mm"] == "1000000.0"


def test_deactivate_releases_model_and_activate_restores(causal_run, sample):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState
    h, _ = causal_run
    client = h.node.create_client(ChangeState, "/d3p_refiner/change_state")
    assert client.wait_for_service(timeout_sec=10)

    def change(transition_id):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        assert h.spin_until(future.done, 10)
        return future.result().success

    assert change(Transition.TRANSITION_DEACTIVATE)
    values = h.counters()
    assert values["active"] == "False" and values["model_loaded"] == "False"
    assert change(Transition.TRANSITION_ACTIVATE)
    values = h.counters()
    assert values["active"] == "True" and values["model_loaded"] == "True"
    h.outputs.clear()
    h.spin_for(0.5)
    assert h.send_lockstep(frames_of(sample, 9000 * NS)[:3]) == 3
    assert h.alive()


def test_debug_image_drawn_over_camera_image(lagged, sample):
    from sensor_msgs.msg import CameraInfo, Image
    from d3p_ros.debug_image import image_to_rgb, project, rgb_to_image
    h = lagged
    k = np.array([200.0, 0, 100, 0, 200.0, 90, 0, 0, 1])
    images = []
    h.node.create_subscription(Image, "/human_pose3d_refined/debug_image", images.append, 10)
    pub_image = h.node.create_publisher(Image, "/camera/image_raw", 10)
    pub_info = h.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
    assert h.spin_until(lambda: pub_image.get_subscription_count() and pub_info.get_subscription_count(), 10)
    h.spin_for(0.3)
    pub_info.publish(CameraInfo(k=k.tolist(), width=200, height=180))
    start = 7000 * NS
    seq = sample[0]
    frames = []
    for i in range(8):
        pixels, _ = project(seq.ground_truth_3d[i] + [0.0, 0.0, 4.0], k)   # a consistent camera
        msg_2d, msg_3d = make_frame(start + i * PERIOD_NS, [dict(track_id=5, keypoints=pixels,
                                    pose=seq.pose_3d[i])], image_size=(200, 180))
        image = rgb_to_image(np.zeros((180, 200, 3), np.uint8), msg_2d.header)
        frames.append((image, msg_2d, msg_3d))
    h.outputs.clear()
    for i, (image, msg_2d, msg_3d) in enumerate(frames):
        pub_image.publish(image)
        h.spin_for(0.05)
        if i < 3:                       # lag 3: these are answered 3 frames later
            h.publish(msg_2d, msg_3d)
            h.spin_for(0.1)
        else:
            assert h.send_lockstep([(msg_2d, msg_3d)]) == 1
    h.spin_until(lambda: len(images) >= 5, 5)
    out_stamps = [r[0] for r in output_people(h.outputs)]
    image_stamps = [m.header.stamp.sec * NS + m.header.stamp.nanosec for m in images]
    assert out_stamps == [start + i * PERIOD_NS for i in range(5)]
    assert image_stamps == out_stamps
    drawn = image_to_rgb(images[-1])
    assert drawn.shape == (180, 200, 3) and (drawn.max(axis=2) > 0).sum() > 100
    from d3p_ros.debug_image import cv_bridge_available
    if not cv_bridge_available():   # optional (not in package.xml): the node says what it lacks
        assert "cv_bridge is not installed" in h.log()


def _causal_copy_of_demo_model(model_dir):
    """The demo model's weights in a causal denoiser (frame embedding dropped, offset biases
    random): untrained as such, but every part of the causal path gets exercised."""
    import torch

    from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
    from d3p_model.refiner import D3PRefiner

    demo = D3PRefiner.load(ensure_demo_model())
    config = DenoiserConfig.from_dict({**demo.denoiser.config.to_dict(), "causal": True})
    net = PoseDenoiser(config)
    state = {k: v for k, v in demo.denoiser.state_dict().items() if k != "frame_embedding"}
    torch.manual_seed(0)
    state.update({k: 0.5 * torch.randn_like(v) for k, v in net.state_dict().items()
                  if k.endswith("offset_bias")})
    net.load_state_dict(state)
    D3PRefiner(net, demo.cnd, steps=demo.steps, joint_uncertainty=demo.joint_uncertainty,
               correction_threshold=0.001).save(model_dir)
    return D3PRefiner.load(model_dir)


def test_causal_mode_streams_a_causal_model_frame_by_frame_as_offline(harness_factory, sample,
                                                                      tmp_path):
    """With a causal model the node refines each person's new frame alone from its stream,
    and publishes what `d3p refine` gives offline for the same track, every frame."""
    refiner = _causal_copy_of_demo_model(tmp_path / "model")
    h = harness_factory("streamed_causal", model_dir=str(tmp_path / "model"),
                        publish_markers=False)
    start = 11000 * NS
    assert h.send_lockstep(frames_of(sample, start)) == sample[0].num_frames
    rows = output_people(h.outputs)
    assert len(rows) == 2 * sample[0].num_frames, h.log()
    values = h.counters()
    assert values["inference"] == "stream" and int(values["inference_batches"]) == 30
    for track_id, seq in zip((1, 2), sample):
        offline = refiner.refine_sequence(seq.keypoints_normalised(),
                                          seq.pose_3d - seq.pose_3d[:, :1])
        got = np.stack([r[3] for r in rows if r[2] == track_id])
        np.testing.assert_allclose(got - got[:, :1], offline, atol=1e-4)
        assert np.abs(offline - (seq.pose_3d - seq.pose_3d[:, :1])).max() > 1e-3
    assert all_finite(h.outputs)
