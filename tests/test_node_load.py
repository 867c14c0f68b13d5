"""The refiner node under load: inference slower than the input must not build a backlog.

The node's subscription callbacks only push frames into the windows; one worker refines
each person's newest ready window whenever it is free and counts the frames it skipped.
Here the node runs IN this process (a subclass whose backend call sleeps, so inference is
deliberately slower than the 50 Hz input) with a feeder node on the same DDS domain: every
output must be the newest frame at the moment the worker took it, skipped + published must
equal what came in, and latency must stay bounded. The window bookkeeping itself is tested
without ROS first.
"""

import threading
import time

import numpy as np
import pytest

from d3p_ros.windows import WindowManager

MS = 1_000_000
NS = 1_000_000_000
PERIOD_NS = 20_000_000          # 50 Hz


# ---------------------------------------------------------------------- windows, no ROS
def push(wm, track_id, t_ms):
    kp, pose = np.full((17, 2), t_ms, np.float32), np.full((17, 3), t_ms, np.float32)
    return wm.push(track_id, int(t_ms * MS), kp, np.ones(17, bool), pose, payload=t_ms)


def test_take_ready_hands_out_only_the_newest_window_and_counts_the_rest():
    wm = WindowManager(window=5, lag=0)
    for t in range(0, 100, 20):
        push(wm, 1, t)
        push(wm, 2, t)
    assert wm.has_pending()
    ready, skipped = wm.take_ready()
    assert [(w.track_id, w.frame.payload) for w in ready] == [(1, 80), (2, 80)]
    assert skipped == 2 * 4
    assert np.all(ready[0].pose_3d[-1] == 80)       # the window ends at the newest frame
    assert not wm.has_pending() and wm.take_ready() == ([], 0)


def test_take_ready_after_every_push_skips_nothing():
    wm = WindowManager(window=3, lag=1)
    taken = []
    for t in range(0, 200, 20):
        push(wm, 7, t)
        ready, skipped = wm.take_ready()
        assert skipped == 0
        taken += [w.frame.payload for w in ready]
    assert taken == list(range(0, 180, 20))          # lag 1: every frame but the last, once


def test_lagged_take_and_restart_and_prune_count_what_was_never_refined():
    """Every accepted frame is published or counted: a restart or a forgotten track counts
    all of its frames no window published, also the last `lag` ones that never had their
    look-ahead."""
    wm = WindowManager(window=6, lag=2, max_gap=0.5, track_timeout=1.0)
    for t in range(0, 100, 20):                      # 5 frames: 3 of them refinable
        push(wm, 1, t)
    ready, skipped = wm.take_ready()
    assert [w.frame.payload for w in ready] == [40] and skipped == 2   # newest - lag
    push(wm, 1, 100)                                 # one more refinable frame ...
    push(wm, 1, 900)                                 # ... then a gap restarts the window
    assert wm.take_ready() == ([], 3)                # 60 (refinable), 80 and 100 (never)
    push(wm, 2, 900)
    push(wm, 2, 920)
    push(wm, 2, 940)                                 # track 2: one refinable frame pending
    push(wm, 3, 3000)
    assert wm.prune(3000 * MS) == [1, 2]             # forgotten with all their frames
    assert wm.take_ready() == ([], 1 + 3)
    assert not wm.has_pending()


# ---------------------------------------------------------------------- the node in-process
rclpy = pytest.importorskip("rclpy")
from conftest import release_domain_id, reserve_domain_id  # noqa: E402
pytest.importorskip("d3p_ros.msg", reason="messages not built (run scripts/setup.sh)")

from d3p_model.data.synthetic import make_synthetic_predictions  # noqa: E402
from d3p_ros.processes import ensure_demo_model  # noqa: E402
from d3p_ros.refiner_node import RefinerNode  # noqa: E402
from d3p_ros.testing import make_frame  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402

pytestmark = pytest.mark.timeout(600)  # the first test may train the demo model


class SlowBackend:
    """The real backend, made `delay` seconds slower per call; records its calls and whether
    it was closed while one was running."""

    def __init__(self, backend, delay: float):
        self._backend, self.delay = backend, delay
        for name in ("name", "device", "precision", "window", "steps", "stride",
                     "correction_threshold", "joint_uncertainty", "model_dir"):
            setattr(self, name, getattr(backend, name))
        self.calls = 0
        self.batch_sizes = []
        self.busy = threading.Event()
        self.closed_while_busy = False
        self.closed = False

    def refine(self, keypoints_2d, pose_3d):
        self.busy.set()
        try:
            time.sleep(self.delay)
            self.calls += 1
            self.batch_sizes.append(len(keypoints_2d))
            return self._backend.refine(keypoints_2d, pose_3d)
        finally:
            self.busy.clear()

    def close(self):
        self.closed_while_busy |= self.busy.is_set()
        self.closed = True
        self._backend.close()


class SlowRefinerNode(RefinerNode):
    delay = 0.1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.backends = []
        self.takes = []         # (taken output stamps, newest pushed stamp per track at that moment, skipped)

    def _load_model(self):
        super()._load_model()
        self.backend = SlowBackend(self.backend, self.delay)
        self.backends.append(self.backend)

    def _take_work(self):
        ready, empty, skipped = super()._take_work()    # called under the node's lock
        newest = {tid: track.frames[-1].stamp_ns for tid, track in self.windows.tracks.items()}
        self.takes.append(({w.track_id: w.frame.stamp_ns for w in ready}, newest, skipped))
        return ready, empty, skipped


class InProcess:
    """The slow node and a feeder node on one context, spun by one executor thread."""

    def __init__(self, delay: float, **overrides):
        from rclpy.parameter import Parameter
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray
        self.domain = reserve_domain_id()
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=self.domain)
        SlowRefinerNode.delay = delay
        params = {"model_dir": str(ensure_demo_model()), "diagnostics_period": 0.2,
                  "autostart": False, **overrides}
        self.node = SlowRefinerNode(context=self.context, parameter_overrides=[
            Parameter(k, value=v) for k, v in params.items()])
        self.feeder = rclpy.create_node("d3p_load_feeder", context=self.context)
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=1000)
        self.pub_2d = self.feeder.create_publisher(Skeleton2DArray, "/human_pose2d", qos)
        self.pub_3d = self.feeder.create_publisher(Skeleton3DArray, "/human_pose3d", qos)
        self.outputs = []       # (receive time, stamp_ns, track ids)
        self.feeder.create_subscription(Skeleton3DArray, "/human_pose3d_refined", self._on_output, qos)
        self.sent = {}          # stamp_ns -> publish time
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.feeder)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def start(self):
        assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        end = time.monotonic() + 10
        while time.monotonic() < end and not (self.pub_2d.get_subscription_count()
                                              and self.pub_3d.get_subscription_count()
                                              and self.feeder.count_publishers("/human_pose3d_refined")):
            time.sleep(0.02)
        time.sleep(0.3)

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown of the context ends the spin
            pass

    def _on_output(self, msg):
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        self.outputs.append((time.monotonic(), stamp, sorted(sk.track_id for sk in msg.skeletons)))

    def feed(self, frames, period: float = PERIOD_NS / NS):
        """Publish (stamp, msg_2d, msg_3d) on a fixed clock, not waiting for anything."""
        start = time.monotonic()
        for i, (stamp, msg_2d, msg_3d) in enumerate(frames):
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.sent[stamp] = time.monotonic()
            self.pub_2d.publish(msg_2d)
            self.pub_3d.publish(msg_3d)

    def wait_outputs(self, condition, timeout: float = 5.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not condition():
            time.sleep(0.02)
        return condition()

    def close(self):
        self.node.trigger_shutdown()
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        self.feeder.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._spinner.join(5)
        release_domain_id(self.domain)


@pytest.fixture(scope="module")
def sequences():
    preds = make_synthetic_predictions(num_sequences=3, num_frames=100, seed=21, subjects=["SYNL"])
    return [seq for _, seq in preds.items()]


def frames_of(sequences, start_ns, count, people=1):
    frames = []
    for i in range(count):
        stamp = start_ns + i * PERIOD_NS
        msg_2d, msg_3d = make_frame(stamp, [dict(track_id=t + 1, keypoints=sequences[t].keypoints_2d[i],
                                                 pose=sequences[t].pose_3d[i]) for t in range(people)])
        frames.append((stamp, msg_2d, msg_3d))
    return frames


@pytest.mark.parametrize("mode,lag,people", [("causal", 0, 1), ("lagged", 3, 3)])
def test_slow_inference_refines_only_the_newest_frames_without_backlog(sequences, mode, lag, people):
    delay = 0.1                          # 5 input frames per refinement at 50 Hz
    run = InProcess(delay, mode=mode, lag_frames=lag, stride=1)
    try:
        run.start()
        frames = frames_of(sequences, 1000 * NS, 100, people)
        fed_at = time.monotonic()
        run.feed(frames)
        feed_seconds = time.monotonic() - fed_at        # 2 s unless this machine is busy
        stamps = [f[0] for f in frames]
        last_expected = stamps[-1 - lag]
        assert run.wait_outputs(lambda: run.outputs and run.outputs[-1][1] == last_expected), run.outputs[-3:]
        time.sleep(2 * delay)            # nothing else may come
        node, backend = run.node, run.node.backend
        counters = dict(node.stats.counters)

        # every refined window was the newest of its track when the worker took it
        assert run.node.takes
        for taken, newest, _ in run.node.takes:
            for track_id, stamp in taken.items():
                assert stamp == newest[track_id] - lag * PERIOD_NS, (taken, newest)
        # all people of a frame in one backend call
        assert set(backend.batch_sizes) == {people}

        # nothing lost silently: every refinable frame is either published or counted skipped
        out_stamps = [s for _, s, _ in run.outputs]
        refinable = len(frames) - lag
        assert counters["pairs"] == len(frames)
        assert counters["published_frames"] == len(run.outputs)
        # skipped_behind counts frames of a track (skeletons); here all people share every frame
        assert counters["published_skeletons"] + counters["skipped_behind"] == refinable * people, counters
        assert len(run.outputs) + counters["skipped_behind"] // people == refinable, counters
        assert all(ids == list(range(1, people + 1)) for _, _, ids in run.outputs)
        assert out_stamps == sorted(set(out_stamps)) and set(out_stamps) <= set(stamps)
        # it was really slower than the input: most frames were skipped, each call ~delay
        assert counters["skipped_behind"] >= refinable * people // 2
        assert len(run.outputs) <= feed_seconds / delay + 3

        # bounded latency: publish -> receive never grows into a backlog
        latencies = [received - run.sent[s + lag * PERIOD_NS] for received, s, _ in run.outputs]
        assert max(latencies) < 2 * delay + 0.3, latencies
        assert np.mean(latencies[-5:]) < 2 * delay + 0.2, latencies

        # no errors, worker still there
        for key in ("dropped_processing_error", "dropped_inference_error", "dropped_non_finite_output"):
            assert counters.get(key, 0) == 0, counters
        assert node._worker is not None and node._worker.is_alive()
    finally:
        run.close()


def test_inference_faster_than_the_input_refines_every_frame(sequences):
    run = InProcess(0.0)                 # the tiny model alone: milliseconds per call
    try:
        run.start()
        frames = frames_of(sequences, 4000 * NS, 20, people=2)
        run.feed(frames, period=0.1)     # 10 Hz: ample margin on a busy machine
        assert run.wait_outputs(lambda: len(run.outputs) >= 20), run.outputs[-3:]
        time.sleep(0.2)
        assert [s for _, s, _ in run.outputs] == [f[0] for f in frames]
        assert all(ids == [1, 2] for _, _, ids in run.outputs)
        counters = run.node.stats.counters
        assert counters["skipped_behind"] == 0 and counters["published_skeletons"] == 40
    finally:
        run.close()


def test_deactivate_while_refining_joins_the_worker_before_releasing_the_model(sequences):
    run = InProcess(0.3)
    try:
        run.start()
        frames = frames_of(sequences, 2000 * NS, 10)
        run.feed(frames[:5])
        first = run.node.backend
        assert first.busy.wait(3.0), "the worker never started refining"
        assert run.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert first.closed and not first.closed_while_busy
        assert run.node._worker is None and run.node.backend is None
        assert run.wait_outputs(lambda: not run.pub_2d.get_subscription_count(), 5.0)
        time.sleep(0.3)                  # the last pass's output may still be on its way
        published = len(run.outputs)
        run.feed(frames[5:7])            # inactive: not refined, nothing published
        time.sleep(0.5)
        assert len(run.outputs) == published

        assert run.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        # the new subscriptions must be matched before input is sent (volatile QoS)
        assert run.wait_outputs(lambda: run.pub_2d.get_subscription_count()
                                and run.pub_3d.get_subscription_count(), 5.0)
        time.sleep(0.3)
        restart = frames_of(sequences, 3000 * NS, 2)
        for frame in restart:            # one at a time: nothing to skip
            run.feed([frame])
            assert run.wait_outputs(lambda: run.outputs and run.outputs[-1][1] == frame[0], 5.0), \
                (run.outputs[-3:], dict(run.node.stats.counters))
        assert run.node.stats.counters.get("dropped_processing_error", 0) == 0
    finally:
        run.close()
    assert run.node._worker is None     # shutdown joined it too


def test_node_latency_benchmark_quick_run(tmp_path):
    """benchmarks/node_latency.py end to end, short, with the tiny demo model (its numbers
    mean nothing here; that the accounting adds up does)."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "node_latency.py"), "--quick",
         "--model", str(ensure_demo_model()), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    payload = json.loads((tmp_path / "node_latency.json").read_text())
    (row,) = payload["results"]
    assert (row["people"], row["backend"], row["threads"], row["window"]) == (1, "onnx", 1, 9)
    assert row["input_frames"] == 100
    assert row["output_frames"] + row["dropped_frames"] == row["input_frames"]
    assert row["output_frames"] > 0 and row["node_skipped_behind"] is not None
    lat = row["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
    assert 0 < row["node_cpu_percent_of_one_core"] < 250 and row["node_peak_memory_mb"] > 50
    assert payload["machine"]["cpu_model"] and payload["machine"]["versions"]["torch"]
    assert payload["benchmark"] == "node_latency" and payload["settings"]["seconds"] == 2
    markdown = (tmp_path / "node_latency.md").read_text()
    assert markdown.startswith("# ") and "| 1 | onnx | 1 |" in markdown
    assert row["mode"] == "causal" and row["max_lag_ms"] == 0 and row["latency_budget_ms"] == 10


def test_node_latency_benchmark_lagged_quick_run(tmp_path):
    """Lagged mode with a stride: every person-frame is timed, the lag it waited is stated
    (L + S - 1 frames) and the budget is that lag + 40 ms."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "node_latency.py"), "--quick", "--people", "2",
         "--mode", "lagged", "--lag-frames", "4", "--stride", "3", "--name", "lagged",
         "--model", str(ensure_demo_model()), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=repo)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "lagged.json").read_text())["results"]
    assert (row["mode"], row["lag_frames"], row["stride"]) == ("lagged", 4, 3)
    assert row["max_lag_ms"] == pytest.approx(1000 * (4 + 3 - 1) / 50)
    assert row["latency_budget_ms"] == pytest.approx(row["max_lag_ms"] + 40)
    # a frame's output cannot come before its look-ahead has arrived
    assert row["latency_ms"]["p50"] >= 1000 * 4 / 50 - 5
    assert row["output_skeletons"] + row["dropped_skeletons"] == row["input_skeletons"]


def test_diagnostics_warn_while_frames_are_skipped():
    from diagnostic_msgs.msg import DiagnosticStatus

    from d3p_ros.diagnostics import NodeStats
    stats = NodeStats()
    stats.time(5.0)
    assert stats.status("r", "cpu", {"active": True}, 20.0).level == DiagnosticStatus.OK
    stats.count("skipped_behind", 7)
    status = stats.status("r", "cpu", {"active": True}, 20.0)
    assert status.level == DiagnosticStatus.WARN and "7 frames skipped" in status.message
    # nothing new skipped since: back to OK, the counter itself keeps its total
    status = stats.status("r", "cpu", {"active": True}, 20.0)
    assert status.level == DiagnosticStatus.OK
    assert {kv.key: kv.value for kv in status.values}["skipped_behind"] == "7"
