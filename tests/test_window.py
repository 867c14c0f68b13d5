"""Per-track temporal windows: modes, resets, timeouts, bounds, missing joints; conversions."""

from types import SimpleNamespace

import numpy as np
import pytest

from d3p_ros.conversions import InvalidSkeleton, skeleton2d_to_numpy, skeleton3d_to_numpy
from d3p_ros.windows import Push, WindowManager

MS = 1_000_000


def frame(value: float):
    return np.full((17, 2), value, np.float32), np.ones(17, bool), np.full((17, 3), value, np.float32)


def push(wm, tid, t_ms, value=None, visible=None):
    kp, vis, pose = frame(t_ms if value is None else value)
    return wm.push(tid, int(t_ms * MS), kp, vis if visible is None else visible, pose, payload=t_ms)


def test_causal_refines_every_frame_padded_at_start():
    wm = WindowManager(window=5, lag=0)
    assert push(wm, 1, 0) is Push.NEW_TRACK
    ready = wm.ready(1)
    assert ready.output_index == 4 and ready.frame.payload == 0
    assert np.all(ready.pose_3d == 0)                    # padded with the first frame
    for t in (20, 40):
        assert push(wm, 1, t) is Push.ADDED
    ready = wm.ready(1)
    assert [float(p[0, 0]) for p in ready.pose_3d] == [0, 0, 0, 20, 40]
    assert ready.frame.payload == 40


def test_lagged_waits_for_lag_frames():
    wm = WindowManager(window=5, lag=2)
    push(wm, 1, 0)
    assert wm.ready(1) is None
    push(wm, 1, 20)
    assert wm.ready(1) is None
    push(wm, 1, 40)
    ready = wm.ready(1)
    assert ready.frame.payload == 0 and ready.output_index == 2
    assert float(ready.pose_3d[ready.output_index, 0, 0]) == 0
    for t in (60, 80, 100):
        push(wm, 1, t)
    ready = wm.ready(1)
    assert ready.frame.payload == 60
    assert [float(p[0, 0]) for p in ready.pose_3d] == [20, 40, 60, 80, 100]


def test_window_memory_is_bounded():
    for kwargs in (dict(window=4), dict(window=4, lag=3, stride=2)):
        wm = WindowManager(**kwargs)
        for i in range(1000):
            push(wm, 1, i * 20)
        # a window, plus the frames still waiting for the windows that will publish them
        assert len(wm.tracks[1].frames) == wm.history <= 4 + wm.lag + wm.stride
    assert WindowManager(window=4).history == 4     # causal: one window


def test_duplicate_out_of_order_and_backward_jump():
    wm = WindowManager(window=5, backward_jump=0.2)
    for t in (1000, 1020, 1040):
        push(wm, 1, t)
    assert push(wm, 1, 1040) is Push.DUPLICATE
    assert push(wm, 1, 1030) is Push.OUT_OF_ORDER
    assert len(wm.tracks[1].frames) == 3
    assert push(wm, 1, 0) is Push.RESET_BACKWARD_JUMP      # bag loop
    assert len(wm.tracks[1].frames) == 1 and wm.ready(1).frame.payload == 0


def test_gap_resets_window():
    wm = WindowManager(window=5, max_gap=0.5)
    push(wm, 1, 0)
    push(wm, 1, 20)
    assert push(wm, 1, 600) is Push.RESET_GAP
    assert [f.payload for f in wm.tracks[1].frames] == [600]
    # the restart begins a new segment, whose seq numbers count anew: a causal stream
    # (d3p_model/causal_stream.py) tells a restart from a continuation by it
    frame = wm.tracks[1].frames[0]
    assert (frame.seq, frame.segment) == (0, 1)


def test_tracks_are_kept_apart_and_timeout_prunes():
    wm = WindowManager(window=3, track_timeout=1.0)
    push(wm, 1, 0, value=1.0)
    push(wm, 2, 0, value=2.0)
    push(wm, 1, 500, value=1.0)
    assert np.all(wm.ready(1).pose_3d == 1.0) and np.all(wm.ready(2).pose_3d == 2.0)
    assert wm.prune(int(1200 * MS)) == [2]          # track 2 last seen 1.2 s ago
    assert list(wm.tracks) == [1]
    assert wm.prune(int(-5000 * MS)) == []          # one frame far back: not yet ...
    assert wm.prune(int(-4980 * MS)) == []
    assert wm.prune(int(-4960 * MS)) == [1]         # ... three: stamps jumped back, stale too


def test_track_limit():
    wm = WindowManager(window=3, max_tracks=2)
    push(wm, 1, 0)
    push(wm, 2, 0)
    assert push(wm, 3, 0) is Push.TRACK_LIMIT       # both were seen in this very frame
    assert not Push.TRACK_LIMIT.accepted and Push.RESET_GAP.accepted
    assert sorted(wm.tracks) == [1, 2]


def test_new_person_replaces_the_least_recently_seen_track():
    # Defect 5: with every slot held by a person gone from view (ids that changed), a new
    # person was refused until the timeout: 96% of person-frames were dropped.
    wm = WindowManager(window=3, max_tracks=2)
    push(wm, 1, 0)
    push(wm, 2, 0)
    push(wm, 2, 20)
    assert push(wm, 3, 20) is Push.NEW_TRACK_EVICTED and Push.NEW_TRACK_EVICTED.accepted
    assert sorted(wm.tracks) == [2, 3]              # 1, seen last, went
    assert push(wm, 4, 20) is Push.TRACK_LIMIT      # 2 and 3 are both in this frame


def test_ids_that_change_every_frame_are_all_refined():
    wm = WindowManager(window=3, max_tracks=32, track_timeout=1.0)
    accepted = 0
    for frame in range(50):                         # 20 people, new ids every frame, 50 Hz
        wm.prune(frame * 20 * MS)
        for person in range(20):
            accepted += push(wm, 1000 * frame + person, frame * 20).accepted
    assert accepted == 50 * 20 and len(wm) <= 32


def test_one_far_future_frame_forgets_nobody():
    # Defect 6: one frame of one person stamped an hour ahead made every other person
    # "stale" (pruned by stamp distance) and restarted all their windows.
    wm = WindowManager(window=5, track_timeout=1.0)
    for i in range(5):
        wm.prune(i * 20 * MS)
        for tid in (1, 2, 3):
            push(wm, tid, i * 20)
    wm.prune(3600 * 1000 * MS)
    assert push(wm, 1, 3600 * 1000) is Push.RESET_GAP
    wm.prune(100 * MS)
    assert sorted(wm.tracks) == [1, 2, 3]
    assert push(wm, 2, 100) is Push.ADDED and len(wm.tracks[2].frames) == wm.history == 5


def test_missing_joints_hold_last_position():
    wm = WindowManager(window=3)
    push(wm, 1, 0, value=5.0)
    kp, vis, pose = frame(7.0)
    kp[3] = np.nan
    vis[3] = False
    wm.push(1, 20 * MS, kp, vis, pose)
    last = wm.ready(1).keypoints_2d[-1]
    assert np.all(np.isfinite(last)) and last[3, 0] == 5.0 and last[4, 0] == 7.0
    assert wm.tracks[1].filled_joints == 1


def test_window_fill():
    wm = WindowManager(window=4)
    assert wm.fill() == 0.0
    push(wm, 1, 0)
    push(wm, 1, 20)
    push(wm, 2, 0)
    assert wm.fill() == pytest.approx((2 + 1) / 2 / 4)


@pytest.mark.parametrize("kwargs", [dict(window=0), dict(window=5, lag=5), dict(window=5, lag=-1),
                                    dict(window=5, max_tracks=0), dict(window=5, track_timeout=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        WindowManager(**kwargs)


# --- conversions (duck-typed messages) --------------------------------------------------

def sk2d(u=None, v=None, conf=(), width=1000, height=1000, layout=""):
    u = list(np.linspace(100, 900, 17)) if u is None else u
    v = list(np.linspace(200, 800, 17)) if v is None else v
    return SimpleNamespace(track_id=7, layout=layout, image_width=width, image_height=height,
                           u=u, v=v, confidence=list(conf))


def sk3d(positions=None, root_relative=True, conf=()):
    positions = list(np.arange(51, dtype=float) / 100) if positions is None else positions
    return SimpleNamespace(track_id=7, layout="h36m17", root_relative=root_relative,
                           positions=positions, confidence=list(conf))


def test_2d_conversion_normalises():
    out = skeleton2d_to_numpy(sk2d())
    assert out.normalised.shape == (17, 2) and out.visible.all()
    assert out.normalised[0, 0] == pytest.approx(100 / 1000 * 2 - 1)


@pytest.mark.parametrize("message, reason", [
    (sk2d(u=[1.0] * 16), "wrong_joint_count"),
    (sk2d(u=[float("nan")] + [1.0] * 16), "non_finite"),
    (sk2d(v=[float("inf")] * 17), "non_finite"),
    (sk2d(width=0), "bad_image_size"),
    (sk2d(layout="coco17"), "wrong_layout"),
    (sk2d(conf=[1.0] * 5), "wrong_joint_count"),
    (sk2d(conf=[0.0] * 17), "too_many_missing_joints"),
])
def test_2d_conversion_rejects(message, reason):
    with pytest.raises(InvalidSkeleton) as err:
        skeleton2d_to_numpy(message, max_missing_joints=6)
    assert err.value.reason == reason


def test_zero_confidence_joint_may_be_nan():
    u = [float("nan")] + list(np.linspace(100, 900, 16))
    out = skeleton2d_to_numpy(sk2d(u=u, conf=[0.0] + [0.9] * 16), max_missing_joints=6)
    assert not out.visible[0] and out.visible[1:].all()


def test_3d_conversion_subtracts_root():
    out = skeleton3d_to_numpy(sk3d(root_relative=False))
    assert np.allclose(out.relative[0], 0) and np.allclose(out.root, [0, 0.01, 0.02])
    assert np.allclose(out.relative + out.root, np.arange(51).reshape(17, 3) / 100)


@pytest.mark.parametrize("positions", [[0.0] * 48, [float("nan")] * 51, [float("-inf")] + [0.0] * 50])
def test_3d_conversion_rejects(positions):
    with pytest.raises(InvalidSkeleton):
        skeleton3d_to_numpy(sk3d(positions))


def test_3d_overflow_after_root_subtraction_is_caught():
    # Defect 3: finite float32 input whose root-relative form overflows (3e38 - -3e38).
    positions = np.zeros((17, 3), np.float32)
    positions[0, 0], positions[16, 0] = 3e38, -3e38
    with pytest.raises(InvalidSkeleton) as err:
        skeleton3d_to_numpy(sk3d(positions.reshape(-1).tolist(), root_relative=False))
    assert err.value.reason in ("non_finite", "implausible_pose")


@pytest.mark.parametrize("joint, value, root_relative", [
    (5, 1e30, True),            # a joint at 1e30 m
    (5, 3.5, True),             # 3.5 m from the pelvis: no body is that long
    (0, 2000.0, False),         # the whole person 2 km from the camera
])
def test_3d_physically_impossible_is_rejected(joint, value, root_relative):
    # Defect 4: absurd finite values passed through to the output, uncounted.
    positions = np.zeros((17, 3), np.float32)
    positions[joint, 2] = value
    if not root_relative:
        positions[1:, 2] += value
    with pytest.raises(InvalidSkeleton) as err:
        skeleton3d_to_numpy(sk3d(positions.reshape(-1).tolist(), root_relative=root_relative))
    assert err.value.reason == "implausible_pose"


def test_3d_absolute_person_far_away_but_plausible_is_kept():
    positions = np.arange(51, dtype=np.float32).reshape(17, 3) / 100 + np.float32(40.0)
    out = skeleton3d_to_numpy(sk3d(positions.reshape(-1).tolist(), root_relative=False))
    assert np.allclose(out.relative + out.root, positions, atol=1e-5)


@pytest.mark.parametrize("width, height", [(1, 1), (1, 2**32 - 1), (640, 8), (100000, 480)])
def test_2d_impossible_image_size_is_rejected(width, height):
    with pytest.raises(InvalidSkeleton) as err:
        skeleton2d_to_numpy(sk2d(width=width, height=height))
    assert err.value.reason == "bad_image_size"


@pytest.mark.parametrize("u0", [1e30, -1e5, 2100.0])
def test_2d_keypoint_far_outside_the_image_is_rejected(u0):
    u = [u0] + list(np.linspace(100, 900, 16))
    with pytest.raises(InvalidSkeleton) as err:
        skeleton2d_to_numpy(sk2d(u=u))
    assert err.value.reason == "implausible_keypoints"


def test_2d_keypoint_a_little_outside_the_image_is_kept():
    u = [-50.0] + list(np.linspace(100, 900, 16))
    out = skeleton2d_to_numpy(sk2d(u=u))
    assert out.visible.all()
    undetected_far = [1e30] + list(np.linspace(100, 900, 16))    # confidence 0: ignored
    out = skeleton2d_to_numpy(sk2d(u=undetected_far, conf=[0.0] + [1.0] * 16), max_missing_joints=6)
    assert not out.visible[0]
