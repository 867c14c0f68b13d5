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
