#!/usr/bin/env python3
"""The refiner node end to end over DDS on loopback: input publish -> refined receive.

For each configuration (people x backend x threads) the node is started as its own process
exactly as the launch file starts it (`d3p_ros.processes.node_command`: the refiner_node
executable with config/refiner.yaml) plus the benchmark's parameters: the shipped model
(d3p_model.refiner.DEFAULT_MODEL, its T and K; --model DIR times another), the mode (causal,
or lagged with --lag-frames and --stride: unset, the node's defaults, half the window and
9 frames), the backend and num_threads asked for, input_rate and a shorter diagnostics
period. This process publishes time-synchronised Skeleton2DArray +
Skeleton3DArray at --rate Hz (GENERATED motion, never Human3.6M; one distinct, increasing stamp
per frame; the wall time just before each frame's first publish is kept) and subscribes to
/human_pose3d_refined and /diagnostics.

Warm-up: publishing runs until a full window (T frames) has gone out and the first refined
output has come back. Then --seconds of frames are measured; publishing goes on for a short
drain so the measured frames see steady load, and their outputs are awaited. Reported per
configuration: latency per person-frame (receive wall time of that person's refined skeleton -
publish wall time of the input frame with the same stamp; in lagged mode one stamp's people
can come in separate messages) p50/p90/p99/max, and in lagged mode the lag itself (the node
waits L to L + S - 1 frames for a frame's look-ahead, so the budget is (L + S - 1) / rate + 40
ms), input frames, output frames, dropped (measured inputs without an output; and the node's
own skipped_behind count from /diagnostics over the interval), achieved output rate per
person, the node's CPU use (/proc/<pid>/stat utime+stime over the interval, % of one core),
its peak memory (VmHWM) and this process's CPU use (it shares the machine).

Network rule: this process and the node discover on loopback only, in a ROS domain reserved
for the run, with ROS logs in a temporary directory (`d3p_ros.processes.ros_environment`).

    .venv/bin/python benchmarks/node_latency.py                      # 1 person, causal, onnx, 1 thread, 20 s
    .venv/bin/python benchmarks/node_latency.py --matrix             # {1,10} x {torch,onnx} x {1,2}
    .venv/bin/python benchmarks/node_latency.py --people 10 --mode lagged --name node_latency_lagged
    .venv/bin/python benchmarks/node_latency.py --people 10 --backends onnx --threads 2
    .venv/bin/python benchmarks/node_latency.py --quick              # smoke run: 2 s, one configuration
Writes benchmarks/results/node_latency.{json,md} (--output-dir to put them elsewhere).
"""

from __future__ import annotations

import argparse
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common  # also puts this checkout first on sys.path

NAME = "node_latency"
BACKENDS = ("torch", "onnx")
DOMAIN_LOCK_DIR = Path(tempfile.gettempdir()) / "d3p-ros-domain-ids"   # shared with tests/conftest.py
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, nargs="+", default=[1], help="people per frame")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["onnx"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="the node's num_threads")
    parser.add_argument("--matrix", action="store_true",
                        help="the whole matrix: people {1, 10} x backends {torch, onnx} x threads {1, 2}")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured interval per configuration")
    parser.add_argument("--rate", type=float, default=50.0, help="input frames per second")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps K")
    parser.add_argument("--mode", choices=("causal", "lagged"), default="causal")
    parser.add_argument("--lag-frames", type=int, default=0,
                        help="lagged mode: the node's lag_frames (0 = its default, window // 2)")
    parser.add_argument("--stride", type=int, default=None,
                        help="lagged mode: the node's stride (default: the node's, "
                             "config/refiner.yaml; 0 = the model's offline stride)")
    parser.add_argument("--model", default=None,
                        help="model directory (default: the node's default for --mode: "
                             "DEFAULT_CAUSAL_MODEL in causal mode, DEFAULT_MODEL in lagged)")
    parser.add_argument("--name", default=NAME, help="results file stem (default node_latency)")
    parser.add_argument("--drain", type=float, default=1.0,
                        help="seconds of input published after the measured interval")
    parser.add_argument("--startup-timeout", type=float, default=120.0,
                        help="seconds for the node to start, load the model and answer")
    common.add_common_arguments(parser)      # --output-dir, --quick
    args = parser.parse_args(argv)
    if args.quick:          # checks the script works: 2 s measured, first configuration only
        args.seconds, args.drain = 2.0, 0.5
    if args.matrix:
        args.people, args.backends, args.threads = [1, 10], list(BACKENDS), [1, 2]
    if args.quick:
        args.people, args.backends, args.threads = args.people[:1], args.backends[:1], args.threads[:1]
    if args.seconds <= 0 or args.rate <= 0 or args.drain < 0:
        parser.error("--seconds and --rate must be > 0, --drain >= 0")
    if min(args.people) < 1 or min(args.threads) < 0:
        parser.error("--people must be >= 1 and --threads >= 0")
    return args


# ---------------------------------------------------------------- ROS isolation
def reserve_domain_id():
    """(domain id, held lock file): an id no test or benchmark on this machine holds (the
    same flock files as tests/conftest.py); the kernel frees it when this process ends."""
    DOMAIN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = os.getpid()
    for i in range(101):
        domain_id = 1 + (start + i) % 101
        lock = open(DOMAIN_LOCK_DIR / f"{domain_id}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return domain_id, lock
    raise RuntimeError(f"all ROS domain ids 1..101 are held (locks in {DOMAIN_LOCK_DIR})")


def isolate_this_process(domain_id: int, log_dir: str) -> None:
    """The network rule for this process, before rclpy starts."""
    from d3p_ros.processes import ros_environment
    env = ros_environment(domain_id=domain_id, log_dir=log_dir)
    for key in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR"):
        os.environ[key] = env[key]
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.pop("ROS_STATIC_PEERS", None)


def model_window(model_dir) -> int:
    import json
    return int(json.loads(Path(model_dir, "model.json").read_text())["denoiser"]["window"])


# ---------------------------------------------------------------- /proc
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS    # fields 14 and 15 of stat


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


# ---------------------------------------------------------------- input
def make_frames(people: int, count: int, rate: float, start_ns: int, seed: int = 0):
    """`count` (stamp_ns, Skeleton2DArray, Skeleton3DArray) of GENERATED motion, built before
    any timing so building messages does not compete with the measurement."""
    import numpy as np

    from d3p_model.data.synthetic import make_synthetic_predictions
    from d3p_ros.testing import make_frame
    length = min(count, 600)   # longer runs play the motion forward and back (no jumps)
    sequences = [seq for _, seq in make_synthetic_predictions(
        num_sequences=people, num_frames=length, seed=seed, subjects=["SYNBENCH"]).items()]
    cycle = list(range(length)) + list(range(length - 2, 0, -1)) or [0]
    period_ns = int(round(1e9 / rate))
    frames = []
    for i in range(count):
        j = cycle[i % len(cycle)]
        stamp = start_ns + i * period_ns
        msg_2d, msg_3d = make_frame(stamp, [
            dict(track_id=p + 1, keypoints=sequences[p].keypoints_2d[j],
                 pose=sequences[p].pose_3d[j], confidence=np.ones(17, np.float32),
                 root_relative=True)
            for p in range(people)], frame_id="bench_camera",
            image_size=tuple(int(v) for v in sequences[0].image_size))
        frames.append((stamp, msg_2d, msg_3d))
    return frames


class Publisher(threading.Thread):
    """Publishes the prepared frames on a fixed clock from its own thread, keeping the wall
    time (time.monotonic) just before each frame's first publish."""

    def __init__(self, pub_2d, pub_3d, frames, rate: float):
        super().__init__(name="bench_publisher", daemon=True)
        self.pub_2d, self.pub_3d, self.frames, self.period = pub_2d, pub_3d, frames, 1.0 / rate
        self.sent: dict[int, float] = {}
        self.late: list[float] = []      # how late each publish was against its schedule (s)
        self.count = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        for i, (stamp, msg_2d, msg_3d) in enumerate(self.frames):
            due = start + i * self.period
            while not self._stop_event.is_set():
                left = due - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.005))
            if self._stop_event.is_set():
                return
            now = time.monotonic()
            self.sent[stamp] = now
            self.late.append(now - due)
            self.pub_2d.publish(msg_2d)
            self.pub_3d.publish(msg_3d)
            self.count = i + 1

    def stop(self) -> None:
        self._stop_event.set()


# ---------------------------------------------------------------- one configuration
def node_overrides(args, model_dir: str, backend: str, threads: int) -> dict:
    overrides = {"model_dir": model_dir, "backend": backend, "num_threads": threads,
                 "steps": args.steps, "mode": args.mode, "lag_frames": args.lag_frames,
                 "input_rate": args.rate, "diagnostics_period": 0.25}
    if args.stride is not None:
        overrides["stride"] = args.stride
    return overrides


def run_configuration(args, model_dir: str, people: int, backend: str, threads: int,
                      domain_id: int, workdir: Path) -> dict:
    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from d3p_ros.diagnostics import values_of
    from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray
    from d3p_ros.processes import node_command, ros_environment

    config = {"people": people, "backend": backend, "threads": threads}
    label = f"{people} people, {backend}, {threads} thread(s)"
    print(f"\n== {label}", flush=True)
    log_path = workdir / f"node_{people}p_{backend}_{threads}t.log"
    env = ros_environment(domain_id=domain_id, log_dir=str(workdir / "ros_log_node"))
    command = node_command(node_overrides(args, model_dir, backend, threads))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("d3p_node_latency_bench", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # Another refiner in this domain would answer our input too and mix its /diagnostics in.
    executor.spin_once(timeout_sec=1.0)
    if node.count_publishers("/human_pose3d_refined") or node.count_subscribers("/human_pose3d"):
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        raise RuntimeError(f"{label}: ROS domain {domain_id} already has a refiner node on it")
    log = open(log_path, "w")
    # cwd: `python -m d3p_ros.refiner_node` must find this checkout, not an installed copy
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=common.REPO)
    publisher = None
    try:
        pub_qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                                for k in ("reliability", "durability", "history")}, depth=10)
        pub_2d = node.create_publisher(Skeleton2DArray, "/human_pose2d", pub_qos)
        pub_3d = node.create_publisher(Skeleton3DArray, "/human_pose3d", pub_qos)
        # stamp -> {track id: receive time}; in lagged mode with a stride one stamp's people
        # may come in several messages
        received: dict[int, dict[int, float]] = {}

        def on_output(msg):
            now = time.monotonic()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            for sk in msg.skeletons:
                received.setdefault(stamp, {}).setdefault(sk.track_id, now)

        diagnostics: list[dict] = []

        def on_diagnostics(msg):
            for status in msg.status:
                if status.name.startswith("d3p_refiner"):
                    diagnostics.append({**values_of(status), "_received": time.monotonic()})
                    del diagnostics[:-3]

        out_qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=200)
        node.create_subscription(Skeleton3DArray, "/human_pose3d_refined", on_output, out_qos)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

        def spin_until(condition, timeout: float) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if condition():
                    return True
                executor.spin_once(timeout_sec=0.01)
            return condition()

        def fresh_diagnostics(timeout: float = 3.0) -> dict:
            since = time.monotonic()
            spin_until(lambda: diagnostics and diagnostics[-1]["_received"] > since, timeout)
            return dict(diagnostics[-1]) if diagnostics else {}

        def node_failed() -> str:
            log.flush()
            return f"node exited with status {process.poll()}:\n" + log_path.read_text(errors="replace")[-3000:]

        ready = spin_until(lambda: process.poll() is not None or (
            diagnostics and diagnostics[-1].get("active") == "True"
            and pub_2d.get_subscription_count() > 0 and pub_3d.get_subscription_count() > 0
            and node.count_publishers("/human_pose3d_refined") > 0), args.startup_timeout)
        if process.poll() is not None or not ready:
            raise RuntimeError(f"{label}: node not ready. " + node_failed())
        spin_until(lambda: False, 0.5)       # the node's side of discovery settles too

        # older nodes reported 0 while no person was tracked: then the model file says it
        window = int(diagnostics[-1].get("window") or 0) or model_window(model_dir)
        warmup_frames = window + int(10 * args.rate)          # at most; normally ~window + a few
        total = warmup_frames + int(round((args.seconds + args.drain) * args.rate))
        frames = make_frames(people, total, args.rate, start_ns=time.time_ns() // 1_000_000 * 1_000_000)
        stamps = [f[0] for f in frames]
        publisher = Publisher(pub_2d, pub_3d, frames, args.rate)
        publisher.start()
        # warm-up: a full window out, and refined output back
        if not spin_until(lambda: publisher.count >= window and received, 10.0 + window / args.rate):
            raise RuntimeError(f"{label}: no refined output during warm-up. " + node_failed())
        first = publisher.count                              # the first measured frame
        before = fresh_diagnostics(1.0)
        cpu_start, bench_cpu_start, wall_start = cpu_seconds(process.pid), time.process_time(), time.monotonic()
        measured_count = int(round(args.seconds * args.rate))
        if first + measured_count > len(frames):
            raise RuntimeError(f"{label}: warm-up took too long ({first} frames)")
        spin_until(lambda: publisher.count >= first + measured_count, args.seconds + 10.0)
        cpu_end, bench_cpu_end, wall_end = cpu_seconds(process.pid), time.process_time(), time.monotonic()
        measured = stamps[first:first + measured_count]
        drained = first + measured_count + int(round(args.drain * args.rate))
        spin_until(lambda: publisher.count >= drained or process.poll() is not None, args.drain + 10.0)
        publisher.stop()
        # outputs of measured frames still on their way
        spin_until(lambda: len(received.get(measured[-1], ())) >= people, 2.0)
        spin_until(lambda: False, 0.3)
        after = fresh_diagnostics(1.0)
        peak_mb = peak_memory_mb(process.pid)
        if process.poll() is not None:
            raise RuntimeError(f"{label}: node died during the run. " + node_failed())

        latencies = np.asarray([t - publisher.sent[s] for s in measured
                                for t in received.get(s, {}).values()]) * 1e3
        answered = [s for s in measured if len(received.get(s, ())) == people]
        skeletons_out = sum(len(received.get(s, ())) for s in measured)
        per_track: dict[int, int] = {}
        for s in measured:
            for track_id in received.get(s, ()):
                per_track[track_id] = per_track.get(track_id, 0) + 1
        lag = int(after.get("lag_frames") or 0)
        stride = int(after.get("stride") or 1)
        # the wait for the look-ahead: at most L + S - 1 frames
        lag_ms = 1000.0 * (lag + stride - 1) / args.rate if args.mode == "lagged" else 0.0
        interval = wall_end - wall_start

        def counter_delta(key):
            if key not in after or key not in before:
                return None
            return int(after[key]) - int(before[key])

        late = np.asarray(publisher.late[first:first + measured_count]) * 1e3
        result = {
            **config,
            "window": window, "steps": args.steps, "mode": args.mode, "rate_hz": args.rate,
            "lag_frames": lag, "stride": stride, "max_lag_ms": round(lag_ms, 3),
            "latency_budget_ms": round(lag_ms + (40.0 if args.mode == "lagged" else 10.0), 3),
            "warmup_frames": first,
            "measured_seconds": round(interval, 3),
            "input_frames": len(measured),
            "output_frames": len(answered),
            "dropped_frames": len(measured) - len(answered),   # frames missing any person
            "input_skeletons": len(measured) * people,
            "output_skeletons": skeletons_out,
            "dropped_skeletons": len(measured) * people - skeletons_out,
            # over [measure start, end + drain]: each read is the first report after that moment
            "node_skipped_behind": counter_delta("skipped_behind"),
            "node_pairs": counter_delta("pairs"),
            "node_published_frames": counter_delta("published_frames"),
            "node_received_3d": counter_delta("received_3d"),
            "node_dropped_total": counter_delta("dropped_total"),
            "output_rate_per_person_hz": round(skeletons_out / people / (len(measured) / args.rate), 2),
            "output_rate_per_track_hz": {str(k): round(v / (len(measured) / args.rate), 2)
                                         for k, v in sorted(per_track.items())},
            "latency_ms": ({name: round(float(np.percentile(latencies, q)), 3)
                            for name, q in (("p50", 50), ("p90", 90), ("p99", 99))}
                           | {"max": round(float(latencies.max()), 3), "mean": round(float(latencies.mean()), 3)}
                           if latencies.size else None),
            # a growing queue shows as latency rising over the interval: last third - first third
            "latency_growth_ms": (round(float(np.median(latencies[-(latencies.size // 3):])
                                             - np.median(latencies[:latencies.size // 3])), 3)
                                  if latencies.size >= 6 else None),
            "node_cpu_percent_of_one_core": round(100.0 * (cpu_end - cpu_start) / interval, 1),
            "node_peak_memory_mb": round(peak_mb, 1),
            "bench_process_cpu_percent_of_one_core": round(100.0 * (bench_cpu_end - bench_cpu_start) / interval, 1),
            "publish_lateness_ms": {"p50": round(float(np.percentile(late, 50)), 3),
                                    "max": round(float(late.max()), 3)} if late.size else None,
            "node_diagnostics": {k: after.get(k) for k in (
                "backend", "device", "precision", "processing_ms_mean", "processing_ms_p95",
                "processing_ms_max", "node_latency_ms_p50", "node_latency_ms_p99", "input_ms_p50",
                "input_ms_p99", "inference_batches")},
            "node_command": command,
        }
        lat = result["latency_ms"] or {}
        print(f"   latency p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms; "
              f"{result['output_frames']}/{result['input_frames']} frames answered, node skipped "
              f"{result['node_skipped_behind']}; node CPU {result['node_cpu_percent_of_one_core']}%, "
              f"peak {result['node_peak_memory_mb']} MB", flush=True)
        return result
    finally:
        # the node first: nothing that fails below may leave it running
        if process.poll() is None:
            process.send_signal(2)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if publisher is not None:
            publisher.stop()
            publisher.join(2.0)
        log.close()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


# ---------------------------------------------------------------- results
def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(payload: dict) -> str:
    rows = []
    for r in payload["results"]:
        if "skipped" in r:
            rows.append([r["people"], r["backend"], r["threads"], "skipped: " + r["skipped"]] + [""] * 12)
            continue
        lat = r["latency_ms"] or {}
        budget = r.get("latency_budget_ms")
        verdict = ("-" if budget is None or lat.get("p99") is None
                   else ("met" if lat["p99"] <= budget else "missed"))
        rows.append([r["people"], r["backend"], r["threads"], fmt(r.get("max_lag_ms")),
                     fmt(lat.get("p50")), fmt(lat.get("p90")),
                     fmt(lat.get("p99")), f"{fmt(budget)} ({verdict})", fmt(lat.get("max")),
                     f"{r['output_frames']}/{r['input_frames']}", r["dropped_frames"],
                     "-" if r["node_skipped_behind"] is None else r["node_skipped_behind"],
                     fmt(r["output_rate_per_person_hz"]), fmt(r.get("latency_growth_ms")),
                     fmt(r["node_cpu_percent_of_one_core"], 0),
                     fmt(r["node_peak_memory_mb"], 0)])
    s = payload["settings"]
    head = (f"Node end to end over DDS on loopback: model {s['model']} (T = {s['window']}), "
            f"K = {s['steps']}, mode {s['mode']}, input {s['rate_hz']:g} Hz, {s['seconds']:g} s "
            "measured per row after warm-up. Latency = a person's refined skeleton received - "
            "its input frame published (same stamp), ms, over every person-frame. Lag = the "
            "longest wait for look-ahead frames, (L + S - 1) frames (0 in causal mode); budget = "
            "lag + 40 ms (lagged) or 10 ms (causal), against p99. Dropped = measured input "
            "frames missing an output for some person; skipped = the "
            "node's skipped_behind (person-frames it did not refine because a newer frame was "
            "waiting). Growth = median latency of the last third of the interval - of the first "
            "third (a growing queue makes it grow with the interval). CPU in % of one core, "
            "memory = peak RSS (VmHWM).")
    table = common.markdown_table(
        ["people", "backend", "threads", "lag", "p50", "p90", "p99", "budget", "max", "answered", "dropped",
         "skipped", "out Hz/person", "growth", "node CPU %", "peak MB"], rows)
    return (f"# Refiner node end to end (node_latency.py)\n\n{head}\n\n{table}\n\n"
            f"{common.machine_line(payload['machine'])}\n")


def main(argv=None) -> int:
    args = parse_arguments(argv)
    from d3p_model.refiner import default_model_dir
    # the node's own default for the mode: causal mode streams the causal model
    model_dir = args.model or str(default_model_dir(causal=args.mode == "causal"))
    if not Path(model_dir, "model.json").is_file():
        print(f"node_latency: no model at {model_dir}", file=sys.stderr)
        return 2
    domain_id, domain_lock = reserve_domain_id()
    workdir = Path(tempfile.mkdtemp(prefix="d3p_node_latency_"))
    isolate_this_process(domain_id, str(workdir / "ros_log_bench"))
    machine = common.machine_description()
    from d3p_ros.inference import BACKENDS as AVAILABLE
    results, failures = [], 0
    try:
        for people in args.people:
            for backend in args.backends:
                for threads in args.threads:
                    if backend not in AVAILABLE:
                        reason = f"backend {backend!r} is not in d3p_ros.inference here"
                        print(f"\n== {people} people, {backend}, {threads} thread(s): skipped, {reason}")
                        results.append({"people": people, "backend": backend, "threads": threads,
                                        "skipped": reason})
                        continue
                    try:
                        results.append(run_configuration(args, model_dir, people, backend, threads,
                                                         domain_id, workdir))
                    except RuntimeError as err:
                        failures += 1
                        print(f"   FAILED: {err}", file=sys.stderr)
                        results.append({"people": people, "backend": backend, "threads": threads,
                                        "skipped": f"failed: {str(err).splitlines()[0]}"})
    finally:
        domain_lock.close()
    window = model_window(model_dir)
    payload = {
        "benchmark": args.name,
        "settings": {"model": str(Path(model_dir).relative_to(common.REPO)) if Path(model_dir).is_relative_to(common.REPO)
                     else str(model_dir), "window": window, "steps": args.steps, "mode": args.mode,
                     "lag_frames": args.lag_frames, "stride": args.stride,
                     "rate_hz": args.rate, "seconds": args.seconds, "drain_seconds": args.drain,
                     "latency_clock": "time.monotonic in the benchmark process (publish and receive)",
                     "node_started_as": "d3p_ros.processes.node_command (launch file's executable + config/refiner.yaml)"},
        "machine": machine,
        "results": results,
    }
    common.write_results(args.output_dir, args.name, payload, markdown(payload))
    shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
