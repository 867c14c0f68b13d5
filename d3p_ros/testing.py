"""Test harness: the refiner node in its own process, fed and watched over DDS from here.

`NodeHarness` starts the node with `processes.node_command` (the launch file's executable and
parameter file), publishes Skeleton2DArray/Skeleton3DArray from this process, and collects
the refined output and /diagnostics. This process must follow the network rule before rclpy
starts (tests/conftest.py sets it); give each harness a domain id of its own.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from d3p_model.skeleton import H36M17
from d3p_ros.diagnostics import values_of
from d3p_ros.processes import node_command, ros_environment

def stamp_of(ns: int) -> Time:
    return Time(sec=int(ns) // 1_000_000_000, nanosec=int(ns) % 1_000_000_000)


def make_frame(stamp_ns: int, people, frame_id: str = "camera", image_size=(1000, 1000),
               stamp_3d_ns: int | None = None):
    """people: iterable of dicts with track_id, keypoints (J, 2) pixels, pose (J, 3) and
    optional confidence (J,), root_relative (default True)."""
    from d3p_ros.msg import Skeleton2D, Skeleton2DArray, Skeleton3D, Skeleton3DArray
    msg_2d, msg_3d = Skeleton2DArray(), Skeleton3DArray()
    msg_2d.header.stamp = stamp_of(stamp_ns)
    msg_3d.header.stamp = stamp_of(stamp_ns if stamp_3d_ns is None else stamp_3d_ns)
    msg_2d.header.frame_id = msg_3d.header.frame_id = frame_id
    for person in people:
        kp = np.asarray(person["keypoints"], dtype=np.float32)
        pose = np.asarray(person["pose"], dtype=np.float32)
        conf = [] if person.get("confidence") is None else np.asarray(person["confidence"], np.float32).tolist()
        msg_2d.skeletons.append(Skeleton2D(
            header=msg_2d.header, track_id=int(person["track_id"]), layout=H36M17,
            image_width=int(image_size[0]), image_height=int(image_size[1]),
            u=kp[:, 0].tolist(), v=kp[:, 1].tolist(), confidence=conf))
        msg_3d.skeletons.append(Skeleton3D(
            header=msg_3d.header, track_id=int(person["track_id"]), layout=H36M17,
            root_relative=bool(person.get("root_relative", True)),
            positions=pose.reshape(-1).tolist(), confidence=conf))
    return msg_2d, msg_3d


class NodeHarness:
    """`namespace`: the node's (__ns:=); its default topics are relative, so they move with it
    and the harness follows them. `env`: extra environment variables for the node process."""

    def __init__(self, overrides: dict, domain_id: int, name: str = "harness", namespace: str = "",
                 env: dict | None = None):
        from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray
        self.workdir = Path(tempfile.mkdtemp(prefix=f"d3p_{name}_"))
        self.log_path = self.workdir / "node.log"
        env = {**ros_environment(domain_id=domain_id, log_dir=str(self.workdir / "ros_log")), **(env or {})}
        overrides = {"diagnostics_period": 0.2, **overrides}
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(node_command(overrides, namespace=namespace), env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        self.namespace = namespace.rstrip("/")
        self.status_name = f"{self.namespace}/d3p_refiner".lstrip("/") + ": refiner"

        def topic(parameter, default):
            name = overrides.get(parameter, default)
            return name if name.startswith("/") else f"{self.namespace}/{name}"
        self.output_topic = topic("output_topic", "human_pose3d_refined")
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"d3p_test_{name}", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=2000)
        self.pub_2d = self.node.create_publisher(Skeleton2DArray, topic("input_2d_topic", "human_pose2d"), qos)
        self.pub_3d = self.node.create_publisher(Skeleton3DArray, topic("input_3d_topic", "human_pose3d"), qos)
        self.outputs: list = []
        self.markers: list = []
        self.diagnostics: list = []
        self.node.create_subscription(Skeleton3DArray, self.output_topic, self.outputs.append, qos)
        from visualization_msgs.msg import MarkerArray
        self.node.create_subscription(MarkerArray, topic("markers_topic", "human_pose3d_refined/markers"),
                                      self.markers.append, qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_diagnostics(self, msg) -> None:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for status in msg.status:
            if status.name == self.status_name:
                self.diagnostics.append({**values_of(status), "_stamp_ns": stamp})
                del self.diagnostics[:-5]   # bounded

    # -------------------------------------------------------------- waiting
    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.02, max(0.0, end - time.monotonic())))

    def spin_until(self, condition, timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return condition()

    def wait_ready(self, timeout: float = 60.0) -> None:
        ok = self.spin_until(lambda: self.process.poll() is not None or (
            self.diagnostics and self.diagnostics[-1].get("active") == "True"
            and self.pub_2d.get_subscription_count() > 0 and self.pub_3d.get_subscription_count() > 0
            and self.node.count_publishers(self.output_topic) > 0), timeout)
        if not ok or self.process.poll() is not None:
            raise RuntimeError(f"refiner node not ready (exit code {self.process.poll()}):\n{self.log()}")
        self.spin_for(0.5)   # let the node's side of discovery settle too

    def counters(self, fresh: bool = True) -> dict:
        """Latest /diagnostics values; `fresh` waits for a report made after this call (by
        its stamp: one already on its way when the call starts would tell the past)."""
        if fresh:
            since = time.time_ns()
            self.spin_until(lambda: self.diagnostics and self.diagnostics[-1]["_stamp_ns"] >= since, 10.0)
        return dict(self.diagnostics[-1]) if self.diagnostics else {}

    def counters_when(self, condition, timeout: float = 15.0) -> dict:
        """Fresh /diagnostics values once `condition(values)` holds (or the last at timeout):
        a busy node may still be working through what was sent."""
        end = time.monotonic() + timeout
        values = self.counters()
        while not condition(values) and time.monotonic() < end:
            values = self.counters()
        return values

    # -------------------------------------------------------------- feeding
    def publish(self, msg_2d=None, msg_3d=None) -> None:
        if msg_2d is not None:
            self.pub_2d.publish(msg_2d)
        if msg_3d is not None:
            self.pub_3d.publish(msg_3d)

    def send_and_wait(self, frames, period: float = 0.01, settle: float = 0.5) -> None:
        """Publish (msg_2d, msg_3d) pairs `period` apart, then spin `settle` seconds."""
        for msg_2d, msg_3d in frames:
            self.publish(msg_2d, msg_3d)
            self.spin_for(period)
        self.spin_for(settle)

    def send_lockstep(self, frames, timeout: float = 3.0) -> int:
        """Publish each pair and wait for its output before the next: independent of how
        fast this (shared) machine is today. Returns how many frames were answered."""
        answered = 0
        for msg_2d, msg_3d in frames:
            before = len(self.outputs)
            self.publish(msg_2d, msg_3d)
            answered += self.spin_until(lambda: len(self.outputs) > before, timeout)
        return answered

    # -------------------------------------------------------------- checks
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        return self.process.returncode


def output_people(outputs) -> list:
    """[(stamp_ns, frame_id, track_id, positions (17, 3), uncertainty, confidence)] of all outputs."""
    rows = []
    for msg in outputs:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for sk in msg.skeletons:
            rows.append((stamp, msg.header.frame_id, int(sk.track_id),
                         np.asarray(sk.positions, np.float64).reshape(-1, 3),
                         np.asarray(sk.uncertainty, np.float64), np.asarray(sk.confidence, np.float64)))
    return rows


def all_finite(outputs) -> bool:
    return all(np.all(np.isfinite(row[3])) and np.all(np.isfinite(row[4])) for row in output_people(outputs))
