"""Bad input to the refiner node: one test each, one node process for the whole module.

Each test reads the node's /diagnostics counters before and after its bad input, checks
what was counted, that nothing non-finite came out, and that the node still answers a good
frame afterwards (process alive, refining). Fed over DDS from this process.
"""

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
PERIOD_NS = 20_000_000
QUEUE_SIZE = 10             # sync_queue_size in config/refiner.yaml


@pytest.fixture(scope="module")
def seqs():
    preds = make_synthetic_predictions(num_sequences=10, num_frames=60, seed=5, subjects=["SYNB"])
    return [seq for _, seq in preds.items()]


@pytest.fixture(scope="module")
def node():
    model_dir = ensure_demo_model()
    domain = reserve_domain_id()
    h = NodeHarness({"model_dir": str(model_dir)}, domain_id=domain, name="bad_input")
    h.wait_ready()
    yield h
    # whatever the tests did: nothing non-finite ever came out, and the node is still up
    assert all_finite(h.outputs)
    assert h.alive(), h.log()
    h.close()
    release_domain_id(domain)


class Clock:
    """Each test gets its own stretch of stamps, far from the previous test's."""
    base = 100 * NS

    @classmethod
    def next_base(cls) -> int:
        cls.base += 100 * NS
        return cls.base


def person(seqs, track_id, i, **extra):
    seq = seqs[(track_id - 1) % len(seqs)]
    i = i % seq.num_frames
    return dict(track_id=track_id, keypoints=seq.keypoints_2d[i].copy(), pose=seq.pose_3d[i].copy(), **extra)


def good_frames(seqs, start_ns, count, tracks=(1,), first=0):
    return [make_frame(start_ns + (first + i) * PERIOD_NS, [person(seqs, t, first + i) for t in tracks])
            for i in range(count)]


def delta(after: dict, before: dict, key: str) -> int:
    return int(after.get(key, 0)) - int(before.get(key, 0))


def still_answers(h, seqs, start_ns, tracks=(1,), count=2):
    h.outputs.clear()
    assert h.send_lockstep(good_frames(seqs, start_ns, count, tracks, first=500)) == count, h.log()
    assert h.alive()


def test_every_counter_is_reported_from_the_start(node):
    # Defect 11: counters were absent from /diagnostics until they first moved.
    from d3p_ros.diagnostics import COUNTERS, DROP_COUNTERS
    values = node.counters()
    missing = [name for name in COUNTERS + DROP_COUNTERS if name not in values]
    assert not missing, missing
    assert values["pairs"] == "0" and values["tracks_timed_out"] == "0"


def set_parameters(h, **values):
    """SetParametersAtomically on the node (`ros2 param set` sets one): (successful, reason)."""
    from rcl_interfaces.msg import Parameter
    from rcl_interfaces.srv import SetParametersAtomically
    from rclpy.parameter import Parameter as RclpyParameter
    client = h.node.create_client(SetParametersAtomically, "/d3p_refiner/set_parameters_atomically")
    assert client.wait_for_service(timeout_sec=10)
    request = SetParametersAtomically.Request(parameters=[
        Parameter(name=k, value=RclpyParameter(k, value=v).get_parameter_value()) for k, v in values.items()])
    future = client.call_async(request)
    assert h.spin_until(future.done, 10)
    h.node.destroy_client(client)
    return future.result().result.successful, future.result().result.reason


def test_invalid_parameter_on_the_active_node_is_rejected_with_the_reason(node):
    # Defect 11: values set on an active node were accepted without any check.
    ok, reason = set_parameters(node, mode="sideways")
    assert not ok and "mode" in reason and "causal" in reason
    ok, reason = set_parameters(node, device="tpu")
    assert not ok and "device" in reason
    ok, reason = set_parameters(node, output_topic="bad topic!")
    assert not ok and "topic" in reason
    ok, reason = set_parameters(node, lag_frames=10_000, mode="lagged")
    assert not ok and "window" in reason
    ok, reason = set_parameters(node, stride=10_000)
    assert not ok and "stride" in reason and "window" in reason
    assert set_parameters(node, warn_throttle=5.0) == (True, "")    # valid: accepted
    assert node.alive()


def test_each_kind_of_bad_input_is_logged_not_only_the_first(node, seqs):
    # Defect 6: warnings were throttled per call site, so a second kind of bad input in the
    # same warn_throttle period (5 s) was never logged. First in the module's bad input, so
    # that neither kind was logged by an earlier test in the last 5 s.
    start = Clock.next_base()
    wrong_layout, msg_3d = make_frame(start, [person(seqs, 1, 0)])
    wrong_layout.skeletons[0].layout = "coco17"
    node.publish(wrong_layout, msg_3d)
    node.spin_for(0.1)
    short, msg_3d = make_frame(start + PERIOD_NS, [person(seqs, 1, 1)])
    short.skeletons[0].u = short.skeletons[0].u[:16].tolist()
    node.publish(short, msg_3d)
    assert node.spin_until(lambda: "layout 'coco17' is not supported" in node.log()
                           and "16 u and 17 v values" in node.log(), 5), node.log()[-3000:]


def test_nan_and_inf_coordinates(node, seqs):
    before = node.counters()
    start = Clock.next_base()
    frames = []
    for i in range(10):
        bad_2d = person(seqs, 1, i)
        bad_2d["keypoints"][4, 0] = np.nan
        bad_3d = person(seqs, 2, i)
        bad_3d["pose"][7, 2] = np.inf
        msg_2d, _ = make_frame(start + i * PERIOD_NS, [bad_2d, person(seqs, 2, i)])
        _, msg_3d = make_frame(start + i * PERIOD_NS, [person(seqs, 1, i), bad_3d])
        frames.append((msg_2d, msg_3d))
    log_lines_before = node.log().count("invalid 2D input dropped")
    node.send_and_wait(frames, period=0.01, settle=0.5)
    after = node.counters_when(lambda v: delta(v, before, "invalid_non_finite") >= 20)
    assert delta(after, before, "invalid_non_finite") == 20
    assert delta(after, before, "published_skeletons") == 0     # each person lost one half
    # warnings are throttled (warn_throttle 5 s): far fewer lines than bad messages
    assert 0 <= node.log().count("invalid 2D input dropped") - log_lines_before <= 2
    assert "invalid 2D input dropped" in node.log()
    still_answers(node, seqs, start + 10 * NS)


def test_wrong_joint_count(node, seqs):
    before = node.counters()
    start = Clock.next_base()
    frames = []
    for i in range(5):
        msg_2d, msg_3d = make_frame(start + i * PERIOD_NS, [person(seqs, 1, i)])
        msg_2d.skeletons[0].u = msg_2d.skeletons[0].u[:16].tolist()
        msg_2d.skeletons[0].v = msg_2d.skeletons[0].v[:16].tolist()
        msg_3d.skeletons[0].positions = msg_3d.skeletons[0].positions[:48].tolist()
        frames.append((msg_2d, msg_3d))
    node.send_and_wait(frames, period=0.01, settle=0.5)
    after = node.counters_when(lambda v: delta(v, before, "invalid_wrong_joint_count") >= 10)
    assert delta(after, before, "invalid_wrong_joint_count") == 10
    assert delta(after, before, "published_skeletons") == 0
    still_answers(node, seqs, start + 10 * NS)


def test_zero_confidence_joints(node, seqs):
    before = node.counters()
    start = Clock.next_base()
    node.outputs.clear()
    confidence = np.ones(17, np.float32)
    confidence[[3, 13, 16]] = 0.0                    # not detected: filled from history
    frames = []
    for i in range(6):
        p = person(seqs, 1, i, confidence=confidence)
        p["keypoints"][[3, 13, 16]] = np.nan         # detectors may leave garbage there
        frames.append(make_frame(start + i * PERIOD_NS, [p]))
    assert node.send_lockstep(frames) == 6
    rows = output_people(node.outputs)
    assert len(rows) == 6 and all_finite(node.outputs)
    assert all(r[5][3] == 0 and r[5][13] == 0 and r[5][0] == 1 for r in rows)
    # almost nothing detected: that person is dropped and counted
    hidden = np.zeros(17, np.float32)
    hidden[:3] = 1
    node.send_and_wait([make_frame(start + (6 + i) * PERIOD_NS, [person(seqs, 1, 6 + i, confidence=hidden)])
                        for i in range(3)], settle=0.5)
    after = node.counters_when(lambda v: delta(v, before, "invalid_too_many_missing_joints") >= 3)
    assert delta(after, before, "filled_joints") == 6 * 3
    assert delta(after, before, "invalid_too_many_missing_joints") == 3
    assert delta(after, before, "dropped_unmatched_track") == 3   # the 3D half, left alone
    still_answers(node, seqs, start + 10 * NS)


def test_duplicate_and_out_of_order_stamps(node, seqs):
    start = Clock.next_base()
    frames = good_frames(seqs, start, 4)
    assert node.send_lockstep(frames) == 4
    before = node.counters()
    node.outputs.clear()
    duplicate = good_frames(seqs, start, 1, first=3)[0]              # same stamp as the last
    late = make_frame(start + 2 * PERIOD_NS - PERIOD_NS // 2, [person(seqs, 1, 2)])   # 10 ms back
    node.send_and_wait([duplicate, late], period=0.05, settle=0.5)
    after = node.counters_when(lambda v: delta(v, before, "pairs") >= 2)
    assert delta(after, before, "dropped_duplicate_stamp") == 1
    assert delta(after, before, "dropped_out_of_order_stamp") == 1
    assert node.outputs == []
    still_answers(node, seqs, start + 10 * NS)


def test_stamp_jump_backwards_restarts_window(node, seqs):
    start = Clock.next_base()
    assert node.send_lockstep(good_frames(seqs, start, 5)) == 5
    before = node.counters()
    node.outputs.clear()
    looped = start - 30 * NS                                         # a bag that loops
    assert node.send_lockstep(good_frames(seqs, looped, 3)) == 3
    after = node.counters()
    assert delta(after, before, "reset_backward_jump") == 1
    assert [r[0] for r in output_people(node.outputs)] == [looped + i * PERIOD_NS for i in range(3)]
    assert int(after["tracks"]) == 1


def test_one_topic_stops_while_the_other_goes_on(node, seqs):
    start = Clock.next_base()
    before = node.counters()
    node.outputs.clear()
    only_2d = good_frames(seqs, start, 30)
    for msg_2d, _ in only_2d:
        node.publish(msg_2d, None)
        node.spin_for(0.01)
    node.spin_for(0.5)
    after = node.counters_when(lambda v: delta(v, before, "received_2d") >= 30)
    assert node.outputs == []
    assert delta(after, before, "received_2d") == 30
    assert delta(after, before, "received_3d") == 0
    # the waiting 2D messages are bounded by the queue; the rest were counted as unpaired
    assert int(after["sync_queued"]) <= QUEUE_SIZE
    assert delta(after, before, "dropped_unpaired") == 30 - QUEUE_SIZE
    still_answers(node, seqs, start + 10 * NS)


def test_2d_at_30hz_and_3d_at_25hz(node, seqs):
    start = Clock.next_base()
    before = node.counters()
    node.outputs.clear()
    events = []
    for i in range(30):                                             # 1 s of each
        stamp = start + round(i * NS / 30)
        events.append((stamp, 0, make_frame(stamp, [person(seqs, 1, i)])[0]))
    for i in range(25):
        stamp = start + round(i * NS / 25)
        events.append((stamp, 1, make_frame(stamp, [person(seqs, 1, i)])[1]))
    stamps_3d = {e[0] for e in events if e[1] == 1}
    for _, index, msg in sorted(events, key=lambda e: (e[0], e[1])):
        node.publish(msg if index == 0 else None, msg if index == 1 else None)
        node.spin_for(0.02)
    node.spin_for(1.0)
    after = node.counters_when(lambda v: delta(v, before, "received_3d") >= 25, timeout=5)
    out_stamps = [r[0] for r in output_people(node.outputs)]
    pairs = delta(after, before, "pairs")
    # |k/30 - m/25| < 10 ms slop for 15 of the 25 3D stamps (every 40 ms stamp within 6.7 ms)
    assert 5 <= pairs <= 25
    assert set(out_stamps) <= stamps_3d and len(out_stamps) == len(set(out_stamps))
    assert out_stamps == sorted(out_stamps)
    assert all_finite(node.outputs)


def test_burst_of_1000_messages_memory_bounded(node, seqs):
    start = Clock.next_base()
    assert node.send_lockstep(good_frames(seqs, start, 3)) == 3    # warm: allocations done
    rss_before = node.rss_mb()
    before = node.counters()
    frames = good_frames(seqs, start + NS, 1000, tracks=(1, 2))
    for msg_2d, msg_3d in frames:
        node.publish(msg_2d, msg_3d)
    node.spin_for(3.0)
    after = node.counters()
    received = delta(after, before, "received_3d")
    assert 0 < received <= 1000
    assert int(after["sync_queued"]) <= 2 * QUEUE_SIZE
    assert int(after["tracks"]) <= 2
    assert node.rss_mb() - rss_before < 40, (rss_before, node.rss_mb())
    still_answers(node, seqs, start + 60 * NS, tracks=(1, 2))


def test_ten_people_at_once(node, seqs):
    start = Clock.next_base()
    node.outputs.clear()
    tracks = tuple(range(1, 11))
    assert node.send_lockstep(good_frames(seqs, start, 8, tracks)) == 8
    for msg in node.outputs:
        assert sorted(sk.track_id for sk in msg.skeletons) == list(tracks)
    rows = output_people(node.outputs)
    # people stay apart: each output is nearest to its own person's input
    for stamp, _, track_id, positions, _, _ in rows[-10:]:
        i = (stamp - start) // PERIOD_NS
        dists = [np.abs(positions - seqs[t - 1].pose_3d[i]).mean() for t in tracks]
        assert int(np.argmin(dists)) + 1 == track_id
    assert int(node.counters()["tracks"]) == 10


def test_unknown_track_id_mid_window(node, seqs):
    start = Clock.next_base()
    assert node.send_lockstep(good_frames(seqs, start, 5, tracks=(1,))) == 5
    before = node.counters()
    node.outputs.clear()
    frames = []
    for i in range(5, 10):
        msg_2d, msg_3d = make_frame(start + i * PERIOD_NS, [person(seqs, 1, i), person(seqs, 77, i)])
        stray_2d, _ = make_frame(start + i * PERIOD_NS, [person(seqs, 88, i)])
        msg_2d.skeletons.append(stray_2d.skeletons[0])            # only in the 2D stream
        frames.append((msg_2d, msg_3d))
    assert node.send_lockstep(frames) == 5
    after = node.counters()
    assert delta(after, before, "tracks_started") == 1             # 77; 88 never had a 3D half
    assert delta(after, before, "dropped_unmatched_track") == 5
    for msg in node.outputs:
        assert sorted(sk.track_id for sk in msg.skeletons) == [1, 77]


# --- issue 14 ------------------------------------------------------------------------------

def test_late_message_after_unpaired_2d_does_not_kill_the_node(node, seqs):
    # Defect 1: a late message evicted itself from the full sync queue and was then popped
    # as a partner: KeyError, the node exited 1.
    start = Clock.next_base()
    node.outputs.clear()
    for i in range(QUEUE_SIZE):                                     # unpaired 2D, later stamps
        node.publish(make_frame(start + 50 * NS + i * PERIOD_NS, [person(seqs, 1, i)])[0], None)
        node.spin_for(0.01)
    msg_2d, msg_3d = make_frame(start, [person(seqs, 1, 0)])
    node.publish(None, msg_3d)
    node.spin_for(0.05)
    node.publish(msg_2d, None)
    assert node.spin_until(lambda: node.outputs, 5), node.log()
    assert [r[0] for r in output_people(node.outputs)] == [start]
    assert node.alive(), node.log()
    still_answers(node, seqs, start + 10 * NS)


def test_far_future_2d_leftovers_do_not_stop_the_output(node, seqs):
    # Defect 2: ten 2D stamped far in the future held the queue for good; every new
    # message was pushed out on arrival and nothing was published again.
    start = Clock.next_base()
    for i in range(QUEUE_SIZE):
        node.publish(make_frame(start + 10**6 * NS + i * PERIOD_NS, [person(seqs, 1, i)])[0], None)
        node.spin_for(0.01)
    node.spin_for(0.3)
    node.outputs.clear()
    assert node.send_lockstep(good_frames(seqs, start, 5)) == 5, node.log()


def test_one_person_overflowing_costs_the_others_nothing(node, seqs):
    # Defect 3: pelvis 3e38 and a wrist -3e38 (absolute) passed the finiteness check, the
    # root-relative inf entered that person's window, the backend rejected the whole batch
    # and every person lost frames.
    start = Clock.next_base()
    before = node.counters()
    node.outputs.clear()
    frames = []
    for i in range(12):
        bad = person(seqs, 2, i, root_relative=False)
        bad["pose"][0] = [3e38, 0.0, 0.0]
        bad["pose"][16] = [-3e38, 0.0, 0.0]
        frames.append(make_frame(start + i * PERIOD_NS, [person(seqs, 1, i), bad]))
    assert node.send_lockstep(frames) == 12, node.log()
    assert [sk.track_id for msg in node.outputs for sk in msg.skeletons] == [1] * 12
    after = node.counters_when(lambda v: delta(v, before, "pairs") >= 12)
    rejected = (delta(after, before, "invalid_non_finite") + delta(after, before, "invalid_implausible_pose"))
    assert rejected == 12 and delta(after, before, "dropped_inference_error") == 0


def test_physically_impossible_input_is_rejected_and_counted(node, seqs):
    # Defect 4: a joint at 1e30 m came out at 1e30 m, uncounted; 1x1 and 1x(2^32-1)
    # images were accepted.
    start = Clock.next_base()
    before = node.counters()
    node.outputs.clear()
    frames = []
    for i in range(3):
        far = person(seqs, 1, i)
        far["pose"][10, 2] = 1e30
        frames.append(make_frame(start + i * PERIOD_NS, [far]))
    for i, size in enumerate([(1, 1), (1, 2**32 - 1)]):
        frames.append(make_frame(start + (3 + i) * PERIOD_NS, [person(seqs, 1, 3 + i)], image_size=size))
    node.send_and_wait(frames, period=0.02, settle=0.5)
    after = node.counters_when(lambda v: delta(v, before, "pairs") >= 5)
    assert delta(after, before, "invalid_implausible_pose") == 3
    assert delta(after, before, "invalid_bad_image_size") == 2
    assert delta(after, before, "published_skeletons") == 0
    assert all(np.abs(r[3]).max() < 100 for r in output_people(node.outputs))
    still_answers(node, seqs, start + 10 * NS)


def test_ids_that_change_every_frame_are_refined_not_dropped(node, seqs):
    # Defect 5: with 20 people whose ids changed every frame, ghost tracks held all
    # max_tracks (32) slots: 96% of person-frames were dropped as track_limit.
    start = Clock.next_base()
    before = node.counters()
    node.outputs.clear()
    frames = [make_frame(start + i * PERIOD_NS, [person(seqs, 1000 * (i + 1) + k, i) for k in range(20)])
              for i in range(10)]
    assert node.send_lockstep(frames, timeout=10) == 10, node.log()
    assert [len(msg.skeletons) for msg in node.outputs] == [20] * 10
    after = node.counters()
    assert delta(after, before, "dropped_track_limit") == 0
    assert delta(after, before, "tracks_evicted") > 0 and int(after["tracks"]) <= 32


def test_one_far_future_frame_does_not_forget_everyone_else(node, seqs):
    # Defect 6: pruning by stamp distance from one far-future frame forgot every other person.
    start = Clock.next_base()
    tracks = (1, 2, 3)
    assert node.send_lockstep(good_frames(seqs, start, 5, tracks)) == 5
    before = node.counters()
    future = make_frame(start + 3600 * NS, [person(seqs, 1, 5)])
    assert node.send_lockstep([future]) == 1
    assert node.send_lockstep(good_frames(seqs, start, 3, tracks, first=6)) == 3
    after = node.counters()
    assert delta(after, before, "tracks_timed_out") == 0
    assert delta(after, before, "tracks_started") == 0
    assert delta(after, before, "reset_gap") == 1 and delta(after, before, "reset_backward_jump") == 1


def test_frame_id_mismatch_is_counted(node, seqs):
    # Defect 6: a 2D/3D frame_id mismatch was accepted silently.
    start = Clock.next_base()
    before = node.counters()
    msg_2d, msg_3d = make_frame(start, [person(seqs, 1, 0)], frame_id="camera_left")
    msg_2d.header.frame_id = "camera_right"
    assert node.send_lockstep([(msg_2d, msg_3d)]) == 1
    assert node.outputs[-1].header.frame_id == "camera_left"       # the 3D header, as always
    assert delta(node.counters(), before, "frame_id_mismatch") == 1
    assert "frame_id 'camera_right' differs" in node.log()
