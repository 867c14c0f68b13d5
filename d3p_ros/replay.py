"""Replay a predictions file as live 2D + 3D (+ ground-truth) topics at the recorded rate.

Each replayed sequence is one person (track id 1, 2, ...) and all of them play at once, so
`--people 3` puts three people in every frame. Stamps are `start + frame / rate`, the same on
all topics of one frame. Without a file, a GENERATED sample is replayed: synthetic motion
(never Human3.6M) lifted by the shipped base lifter (d3p_model.data.demo_sample).

Run:  python -m d3p_ros.replay [FILE.npz] [--people N] [--rate 50] [--frames N]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args

from d3p_model.data.predictions import load_predictions
from d3p_model.skeleton import H36M17

SAMPLE_NOTE = ("GENERATED sample (synthetic motion lifted by the shipped base lifter), "
               "not Human3.6M data")


def generated_sample(people: int, frames: int, seed: int = 7):
    from d3p_model.data.demo_sample import make_demo_sample
    return make_demo_sample(num_people=people, num_frames=frames, seed=seed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", nargs="?", help="predictions .npz (default: a generated sample)")
    parser.add_argument("--people", type=int, default=2, help="sequences played at once, one track each")
    parser.add_argument("--sequences", nargs="*", default=None, help="sequence keys to play (default: the first --people)")
    parser.add_argument("--rate", type=float, default=50.0, help="frames per second (the recording's rate)")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many frames (0 = all)")
    parser.add_argument("--frame-id", default="camera_optical_frame")
    parser.add_argument("--topic-2d", default="/human_pose2d")
    parser.add_argument("--topic-3d", default="/human_pose3d")
    parser.add_argument("--topic-gt", default="/human_pose3d_ground_truth",
                        help="ground truth (Skeleton3DArray), published when the file has it; '' = off")
    parser.add_argument("--root-offset", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="publish absolute 3D (root_relative=false) with the root at this camera-frame point")
    parser.add_argument("--wait-subscribers", type=int, default=1,
                        help="wait until this many subscribers listen to the 3D topic (0 = do not wait)")
    parser.add_argument("--wait-timeout", type=float, default=60.0)
    parser.add_argument("--track-id-offset", type=int, default=1)
    return parser


class Replay(Node):
    def __init__(self, args, sequences: list):
        super().__init__("d3p_replay")
        from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray
        qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=50)
        self.args = args
        self.sequences = sequences
        self.pub_2d = self.create_publisher(Skeleton2DArray, args.topic_2d, qos)
        self.pub_3d = self.create_publisher(Skeleton3DArray, args.topic_3d, qos)
        has_gt = any(seq.ground_truth_3d is not None for _, seq in sequences)
        self.pub_gt = (self.create_publisher(Skeleton3DArray, args.topic_gt, qos)
                       if args.topic_gt and has_gt else None)
        total = max(seq.num_frames for _, seq in sequences)
        self.num_frames = min(total, args.frames) if args.frames > 0 else total

    def wait_for_subscribers(self) -> bool:
        deadline = time.monotonic() + self.args.wait_timeout
        while time.monotonic() < deadline:
            if (self.pub_3d.get_subscription_count() >= self.args.wait_subscribers
                    and self.pub_2d.get_subscription_count() >= min(1, self.args.wait_subscribers)):
                # the publisher sees the match before every subscriber sees it: settle first
                time.sleep(0.5)
                return True
            rclpy.spin_once(self, timeout_sec=0.05)
        return False

    def frame_messages(self, index: int, stamp):
        from d3p_ros.msg import Skeleton2D, Skeleton2DArray, Skeleton3D, Skeleton3DArray
        header = Skeleton2DArray().header
        header.stamp = stamp
        header.frame_id = self.args.frame_id
        msg_2d, msg_3d, msg_gt = (Skeleton2DArray(header=header), Skeleton3DArray(header=header),
                                  Skeleton3DArray(header=header))
        offset = None if self.args.root_offset is None else np.asarray(self.args.root_offset, np.float32)
        for person, (_, seq) in enumerate(self.sequences):
            if index >= seq.num_frames:
                continue            # this person's sequence has ended: they left the view
            track_id = self.args.track_id_offset + person
            width, height = (int(round(x)) for x in seq.image_size)
            kp = seq.keypoints_2d[index]
            conf = seq.confidence_2d[index].tolist() if seq.confidence_2d is not None else []
            msg_2d.skeletons.append(Skeleton2D(
                header=header, track_id=track_id, layout=H36M17, image_width=width, image_height=height,
                u=kp[:, 0].tolist(), v=kp[:, 1].tolist(), confidence=conf))
            for msg, pose in ((msg_3d, seq.pose_3d), (msg_gt, seq.ground_truth_3d)):
                if pose is None:
                    continue
                positions = pose[index] if offset is None else pose[index] + offset
                msg.skeletons.append(Skeleton3D(
                    header=header, track_id=track_id, layout=H36M17, root_relative=offset is None,
                    positions=np.asarray(positions, np.float32).reshape(-1).tolist(), confidence=conf))
        return msg_2d, msg_3d, msg_gt

    def play(self) -> int:
        period = 1.0 / self.args.rate
        start_stamp_ns = self.get_clock().now().nanoseconds
        start = time.monotonic()
        for index in range(self.num_frames):
            # sleep to the frame's due time, not a fixed period: no drift over long replays
            delay = start + index * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ns = start_stamp_ns + int(round(index * period * 1e9))
            stamp = Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
            msg_2d, msg_3d, msg_gt = self.frame_messages(index, stamp)
            if self.pub_gt is not None:
                self.pub_gt.publish(msg_gt)     # first, so the evaluator has it when the rest arrives
            self.pub_2d.publish(msg_2d)
            self.pub_3d.publish(msg_3d)
        return self.num_frames


def select_sequences(predictions, keys, people: int) -> list:
    if keys:
        missing = [k for k in keys if k not in predictions.sequences]
        if missing:
            raise SystemExit(f"replay: sequences {missing} not in the file; it has "
                             f"{list(predictions.sequences)[:10]}...")
        return [(k, predictions.sequences[k]) for k in keys]
    if people < 1:
        raise SystemExit("replay: --people must be >= 1")
    return list(predictions.items())[:people]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(remove_ros_args(argv))
    if args.rate <= 0:
        raise SystemExit("replay: --rate must be > 0")
    if args.predictions:
        predictions = load_predictions(args.predictions)
        source = args.predictions
    else:
        predictions = generated_sample(args.people, args.frames or 300)
        source = SAMPLE_NOTE
    sequences = select_sequences(predictions, args.sequences, args.people)
    rclpy.init(args=argv)
    node = Replay(args, sequences)
    try:
        print(f"replay: {len(sequences)} people from {source}: {[k for k, _ in sequences]}", flush=True)
        if args.wait_subscribers > 0 and not node.wait_for_subscribers():
            print(f"replay: no {args.wait_subscribers} subscribers on {args.topic_3d} after "
                  f"{args.wait_timeout:.0f} s; giving up", file=sys.stderr, flush=True)
            return 2
        sent = node.play()
        # let reliable deliveries finish before the publishers disappear
        time.sleep(0.3)
        print(f"replay: published {sent} frames at {args.rate:g} Hz", flush=True)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
