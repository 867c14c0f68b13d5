"""Live MPJPE of the lifter's input and the refiner's output against ground truth.

Subscribes to the input 3D, the refined 3D and the ground-truth topics (Skeleton3DArray),
matches skeletons by (stamp, track id), and prints MPJPE before/after (root-relative, mm)
every `--print-every` seconds and a summary at the end (Ctrl-C / SIGINT / SIGTERM, or
`--idle-timeout` seconds without new messages, or `--duration`). It also checks what the
node must guarantee: refined stamps and frame ids equal the input's, no NaN.

Run:  python -m d3p_ros.evaluator_node [--json OUT.json] [--idle-timeout 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import OrderedDict

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args

from d3p_model.skeleton import NUM_JOINTS, ROOT

STREAMS = ("input", "refined", "truth")
MAX_PENDING = 20000
# the refiner's /diagnostics values worth a line in the summary
NODE_KEYS = ("received_2d", "received_3d", "pairs", "published_frames", "dropped_total",
             "processing_ms_mean", "processing_ms_p95", "backend", "device", "mode")     # (stamp, track) entries waiting for their partners; oldest go first


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--topic-input", default="/human_pose3d")
    parser.add_argument("--topic-refined", default="/human_pose3d_refined")
    parser.add_argument("--topic-truth", default="/human_pose3d_ground_truth")
    parser.add_argument("--print-every", type=float, default=1.0, help="seconds between live lines")
    parser.add_argument("--idle-timeout", type=float, default=0.0,
                        help="finish after this many seconds without messages, once some came (0 = never)")
    parser.add_argument("--duration", type=float, default=0.0, help="finish after this many seconds (0 = never)")
    parser.add_argument("--json", default="", help="write the summary here")
    return parser


def mpjpe_mm(pose: np.ndarray, truth: np.ndarray) -> float:
    pose = pose - pose[ROOT]
    truth = truth - truth[ROOT]
    return float(np.linalg.norm(pose - truth, axis=-1).mean() * 1000.0)


class Evaluator(Node):
    def __init__(self, args):
        super().__init__("d3p_evaluator")
        from d3p_ros.msg import Skeleton3DArray
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=200)
        self._init_scores(args)
        for stream, topic in zip(STREAMS, (args.topic_input, args.topic_refined, args.topic_truth)):
            self.create_subscription(Skeleton3DArray, topic,
                                     lambda msg, s=stream: self._on_message(s, msg), qos)
        from diagnostic_msgs.msg import DiagnosticArray
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._last_print = time.monotonic()
        self.create_timer(0.1, self._tick)
        self.done = False

    def _init_scores(self, args) -> None:
        """The scoring state (no ROS in it: the tests feed _on_message directly)."""
        self.args = args
        self.pending: OrderedDict = OrderedDict()    # (stamp_ns, track) -> {stream: (pose, frame_id)}
        self.errors = {"input": [], "refined": []}
        self.per_track: dict = {}
        self.received = dict.fromkeys(STREAMS, 0)
        # skeletons, not messages: causal mode publishes one message per frame with every
        # person, lagged mode one per person and window
        self.skeletons = dict.fromkeys(STREAMS, 0)
        self.refined_nan = 0
        self.frame_id_mismatch = 0
        self.uncertainty_missing = 0
        self.last_message = None
        self.started = time.monotonic()
        self.node_status = {}

    def _on_message(self, stream: str, msg) -> None:
        self.last_message = time.monotonic()
        self.received[stream] += 1
        self.skeletons[stream] += len(msg.skeletons)
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        for sk in msg.skeletons:
            positions = np.asarray(sk.positions, dtype=np.float64)
            if stream == "refined":
                if not np.all(np.isfinite(positions)) or not np.all(np.isfinite(sk.uncertainty)):
                    self.refined_nan += 1
                    continue
                if len(sk.uncertainty) != NUM_JOINTS:
                    self.uncertainty_missing += 1
            if positions.shape != (NUM_JOINTS * 3,) or not np.all(np.isfinite(positions)):
                continue
            key = (stamp, int(sk.track_id))
            entry = self.pending.setdefault(key, {})
            entry[stream] = (positions.reshape(NUM_JOINTS, 3), msg.header.frame_id)
            if len(entry) == len(STREAMS):
                self._score(key, self.pending.pop(key))
        while len(self.pending) > MAX_PENDING:
            self.pending.popitem(last=False)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("d3p_refiner"):
                self.node_status = {kv.key: kv.value for kv in status.values}

    def _score(self, key, entry) -> None:
        truth = entry["truth"][0]
        if entry["refined"][1] != entry["input"][1]:
            self.frame_id_mismatch += 1
        track = self.per_track.setdefault(key[1], {"input": [], "refined": []})
        for stream in ("input", "refined"):
            error = mpjpe_mm(entry[stream][0], truth)
            self.errors[stream].append(error)
            track[stream].append(error)

    def summary(self) -> dict:
        mean = lambda v: float(np.mean(v)) if v else float("nan")  # noqa: E731
        before, after = mean(self.errors["input"]), mean(self.errors["refined"])
        return {
            "matched_skeletons": len(self.errors["refined"]),
            "mpjpe_input_mm": before,
            "mpjpe_refined_mm": after,
            "improvement_percent": ((before - after) / before * 100.0 if self.errors["input"] and before > 0
                                    else float("nan")),
            "per_track": {str(t): {"skeletons": len(v["refined"]), "mpjpe_input_mm": mean(v["input"]),
                                   "mpjpe_refined_mm": mean(v["refined"])}
                          for t, v in sorted(self.per_track.items())},
            "received_messages": dict(self.received),
            "received_skeletons": dict(self.skeletons),
            "refined_frames": self.received["refined"],   # messages: one per frame in causal mode
            "refined_non_finite": self.refined_nan,
            "refined_without_uncertainty": self.uncertainty_missing,
            "frame_id_mismatches": self.frame_id_mismatch,
            "unmatched_pending": len(self.pending),
            "node": {k: self.node_status[k] for k in NODE_KEYS if k in self.node_status},
        }

    def _tick(self) -> None:
        now = time.monotonic()
        if self.args.print_every > 0 and now - self._last_print >= self.args.print_every and self.errors["input"]:
            self._last_print = now
            s = self.summary()
            print(f"evaluator: {s['matched_skeletons']:6d} skeletons  MPJPE input "
                  f"{s['mpjpe_input_mm']:7.2f} mm  refined {s['mpjpe_refined_mm']:7.2f} mm  "
                  f"({s['improvement_percent']:.1f}% lower)", flush=True)
        if self.args.duration > 0 and now - self.started >= self.args.duration:
            self.done = True
        if (self.args.idle_timeout > 0 and self.last_message is not None
                and now - self.last_message >= self.args.idle_timeout):
            self.done = True


def format_summary(s: dict) -> str:
    change = s["improvement_percent"]
    verdict = (f"{change:.1f}% lower" if change > 0 else
               "the input has no error to lower" if np.isnan(change) else
               f"{-change:.1f}% HIGHER: not improved")
    lines = [f"MPJPE before/after over {s['matched_skeletons']} skeletons: "
             f"input {s['mpjpe_input_mm']:.2f} mm -> refined {s['mpjpe_refined_mm']:.2f} mm ({verdict})"]
    for track, v in s["per_track"].items():
        lines.append(f"  track {track}: {v['skeletons']} skeletons, {v['mpjpe_input_mm']:.2f} -> "
                     f"{v['mpjpe_refined_mm']:.2f} mm")
    skeletons = s["received_skeletons"]
    lines.append(f"  skeletons: {skeletons['input']} input, {skeletons['refined']} refined "
                 f"({skeletons['input'] - skeletons['refined']} not refined: dropped, still in "
                 f"flight, or the last lag_frames of a lagged node), non-finite "
                 f"{s['refined_non_finite']}, frame_id mismatches {s['frame_id_mismatches']}")
    if s["node"]:
        lines.append("  refiner node: " + ", ".join(f"{k} {v}" for k, v in s["node"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(remove_ros_args(argv))
    rclpy.init(args=argv, signal_handler_options=rclpy.signals.SignalHandlerOptions.NO)
    node = Evaluator(args)
    stop = {"now": False}

    def request_stop(*_):
        stop["now"] = True
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not (stop["now"] or node.done):
            rclpy.spin_once(node, timeout_sec=0.05)
    except ExternalShutdownException:
        pass
    summary = node.summary()
    print("evaluator summary: " + format_summary(summary), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
