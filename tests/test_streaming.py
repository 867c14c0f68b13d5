"""Streaming windows (d3p_ros/windows.py, lagged mode with a stride): each window is refined
once and publishes up to `stride` frames, each the blend of every window that covered it.

Properties (hypothesis, stateful input: people, gaps, a worker that keeps up or falls behind):
every accepted frame is published at most once, published + counted = accepted, outputs
come in stamp order per person, and a worker that keeps up publishes each frame L to
L + s - 1 frames after it arrived. Parity: with lag T - 1 the stream equals offline
refinement (`refine_in_windows`) away from the sequence end.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from d3p_model.data.windows import refine_in_windows
from d3p_ros.windows import WindowManager

MS = 1_000_000
PERIOD_MS = 20


def fake_refine(keypoints_2d, pose_3d):
    """Deterministic, position-dependent, content-dependent: a wrong blend or a shifted
    window changes the output."""
    positions = np.arange(pose_3d.shape[1], dtype=np.float32)[None, :, None, None]
    return pose_3d + 0.01 * positions + 0.1 * np.sin(pose_3d.sum(axis=(1, 2, 3)))[:, None, None, None]


def frame_values(seq_value: float):
    return (np.full((17, 2), seq_value, np.float32), np.ones(17, bool),
            np.full((17, 3), seq_value, np.float32))


def run_stream(wm, events, take_every=1):
    """events: (track_id, t_ms) pushes in order; the worker takes after every `take_every`
    pushes. Returns {(track, t_ms): (pose, newest t_ms of that track when published)}, the
    number counted as skipped, and the number of accepted frames."""
    published, skipped, accepted = {}, 0, 0
    newest = {}

    def work():
        nonlocal skipped
        ready, superseded = wm.take_ready()
        skipped += superseded
        if ready:
            refined = fake_refine(np.stack([w.keypoints_2d for w in ready]),
                                  np.stack([w.pose_3d for w in ready]))
            for window, out in zip(ready, refined):
                frames, uncovered = wm.complete(window, out)
                skipped += uncovered
                for frame, pose in frames:
                    key = (window.track_id, frame.payload)
                    assert key not in published, f"{key} published twice"
                    published[key] = (pose, newest[window.track_id])

    for i, (track_id, t_ms) in enumerate(events):
        wm.prune(t_ms * MS)
        kp, vis, pose = frame_values(t_ms / 1000)
        if wm.push(track_id, t_ms * MS, kp, vis, pose, payload=t_ms).accepted:
            accepted += 1
            newest[track_id] = t_ms
        if (i + 1) % take_every == 0:
            work()
    work()
    return published, skipped, accepted


@st.composite
def streams(draw):
    window = draw(st.integers(2, 12))
    lag = draw(st.integers(1, window - 1))
    stride = draw(st.integers(1, window))
    people = draw(st.integers(1, 4))
    events, t = [], 0
    for _ in range(draw(st.integers(1, 80))):
        t += draw(st.sampled_from([PERIOD_MS] * 12 + [0, 700, 3000]))   # dups, gaps, timeouts
        present = draw(st.lists(st.integers(1, people), min_size=1, max_size=people, unique=True))
        events += [(track_id, t) for track_id in sorted(present)]
    take_every = draw(st.integers(1, 6))
    return window, lag, stride, events, take_every


@settings(max_examples=200, deadline=None)
@given(streams())
def test_every_accepted_frame_is_published_once_or_counted(stream):
    window, lag, stride, events, take_every = stream
    wm = WindowManager(window, lag, track_timeout=1.0, max_gap=0.5, stride=stride)
    published, skipped, accepted = run_stream(wm, events, take_every)
    # what is still waiting for its window (the newest frames of live tracks) is counted
    # when those tracks end: forget them all
    for k in range(3):
        wm.prune((events[-1][1] + 10_000 + k) * MS)
    _, orphaned = wm.take_ready()
    assert len(wm) == 0
    assert len(published) + skipped + orphaned == accepted
    # per person, outputs in stamp order: publication order within a track is stamp order
    for track_id in {tid for tid, _ in published}:
        stamps = [t for (tid, t) in published if tid == track_id]
        assert stamps == sorted(stamps)
    for pose, _ in published.values():
        assert pose.shape == (17, 3) and np.all(np.isfinite(pose))


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 12), st.data())
def test_a_worker_that_keeps_up_publishes_every_frame_within_lag_plus_stride(window, data):
    lag = data.draw(st.integers(1, window - 1))
    stride = data.draw(st.integers(1, window))
    people = data.draw(st.integers(1, 5))
    frames = data.draw(st.integers(1, 60))
    wm = WindowManager(window, lag, stride=stride)
    events = [(tid, i * PERIOD_MS) for i in range(frames) for tid in range(1, people + 1)]
    published, skipped, accepted = run_stream(wm, events, take_every=1)
    assert skipped == 0
    for tid in range(1, people + 1):
        got = sorted(t // PERIOD_MS for (track, t) in published if track == tid)
        # every frame is out once the stream is lag + stride - 1 frames past it
        assert set(got) >= {i for i in range(frames) if i + lag + stride - 1 < frames}
        for i in got:
            _, newest = published[(tid, i * PERIOD_MS)]
            assert lag <= newest // PERIOD_MS - i <= lag + stride - 1
    # the people's windows are spread over the stride's phases: at most ceil(people / s)
    # windows are due on any one frame
    phases = [track.phase for track in wm.tracks.values()]
    assert max(phases.count(p) for p in set(phases)) == -(-people // stride)


@pytest.mark.parametrize("window, stride, threshold", [(9, 3, 0.0), (27, 9, 0.0), (5, 5, 0.0),
                                                      (6, 1, 0.0), (9, 3, 0.14)])
def test_lagged_stream_with_lag_window_minus_one_equals_offline_refinement(window, stride,
                                                                           threshold):
    """Also with a correction threshold: both soft-threshold the blended frame."""
    rng = np.random.default_rng(window * 10 + stride)
    frames = 5 * window + 7
    pose = (0.2 * rng.normal(size=(frames, 17, 3))).astype(np.float32)
    pose[:, 0] = 0      # root-relative, as the node stores it
    keypoints = rng.uniform(-1, 1, (frames, 17, 2)).astype(np.float32)
    offline = refine_in_windows(fake_refine, keypoints, pose, window, 17, stride,
                                correction_threshold=threshold)
    if threshold:
        raw = refine_in_windows(fake_refine, keypoints, pose, window, 17, stride)
        corrections = np.linalg.norm(raw - pose, axis=-1)
        assert (corrections < threshold).mean() > 0.1 and (corrections > threshold).mean() > 0.1

    wm = WindowManager(window, lag=window - 1, stride=stride)
    streamed = {}
    for i in range(frames):
        wm.push(1, i * PERIOD_MS * MS, keypoints[i], np.ones(17, bool), pose[i], payload=i)
        ready, skipped = wm.take_ready()
        assert skipped == 0
        if ready:
            refined = fake_refine(np.stack([w.keypoints_2d for w in ready]),
                                  np.stack([w.pose_3d for w in ready]))
            for w, out in zip(ready, refined):
                for frame, value in wm.complete(w, out, threshold)[0]:
                    streamed[frame.payload] = value
    # offline aligns its last window to the sequence end; the stream cannot know the end
    comparable = [i for i in streamed if i < frames - window - stride]
    assert len(comparable) >= 3 * window
    for i in comparable:
        np.testing.assert_allclose(streamed[i], offline[i], atol=1e-6, err_msg=f"frame {i}")


def test_causal_mode_refuses_a_stride():
    with pytest.raises(ValueError, match="stride must be 1"):
        WindowManager(5, lag=0, stride=3)
    with pytest.raises(ValueError, match="stride must be in"):
        WindowManager(5, lag=2, stride=6)
