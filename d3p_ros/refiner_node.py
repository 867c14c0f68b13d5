"""The D3PRefiner ROS 2 node: subscribe -> synchronise -> window -> infer -> publish.

A lifecycle node (`d3p_refiner`). configure: read parameters, load the model (a missing or
corrupt model fails here, with the file named), create publishers. activate: (re)load the
model if it was released, start the inference worker, subscribe. deactivate: unsubscribe,
stop (join) the worker, release the model, forget the windows. cleanup: drop publishers and
timers. With `autostart` (default) the node configures and activates itself, so `ros2 run`
and the launch file need no lifecycle manager; if that configure fails the process exits
with status 1. The `shutdown` transition (`ros2 lifecycle set /d3p_refiner shutdown`) ends
the process (status 0). Parameters set while the node runs are checked by a callback that
rejects invalid values with the reason; they take effect at the next configure.

Threads: the subscription callbacks (executor thread) only pair, convert and push frames
into the per-track windows. One inference worker thread, whenever it is free, takes every
track's NEWEST due window (all of them in one backend call), refines, blends and publishes.
Causal mode refines a window for every frame (with a causal model, e.g. the default in this
mode, each person's new frame alone, from the history its stream keeps: d3p_model/
causal_stream.py); lagged mode one window per person every
`stride` frames, each frame published once as the blend of the windows that covered it
(d3p_ros/windows.py; people are staggered over the stride's phases, so one stamp's people
can come in more than one output message). When inference is slower than the input, the
frames superseded meanwhile are not refined: they are counted (`skipped_behind`) and warned
about, instead of piling up in DDS queues.

Run:  python -m d3p_ros.refiner_node --ros-args --params-file config/refiner.yaml
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleState, Node as LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.validate_topic_name import validate_topic_name

from d3p_model.causal_stream import CausalStreams
from d3p_model.skeleton import NUM_JOINTS
from d3p_ros.conversions import (InvalidSkeleton, fill_skeleton3d, skeleton2d_to_numpy,
                                 skeleton3d_to_numpy, stamp_to_ns)
from d3p_ros.diagnostics import NodeStats, diagnostic_array
from d3p_ros.inference import BACKENDS, create_backend, refine_isolated
from d3p_ros.debug_image import DebugImageRenderer, cv_bridge_available
from d3p_ros.markers import MarkerIds, skeleton_markers, track_color
from d3p_ros.synchronizer import make_synchronizer
from d3p_ros.throttle import KindThrottle
from d3p_ros.windows import Push, WindowManager

NODE_NAME = "d3p_refiner"
MODES = ("causal", "lagged")
WORKER_JOIN_TIMEOUT = 30.0      # s; a backend call longer than this is reported, not waited for
MAX_PENDING_EMPTY = 100         # "nobody in view" frames waiting for the worker
QOS_CHOICES = ("sensor_data", "reliable")
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?")

_STR, _INT, _DBL, _BOOL = (ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_INTEGER,
                           ParameterType.PARAMETER_DOUBLE, ParameterType.PARAMETER_BOOL)

# name: (default, type, description, range or None). Ranges are enforced by rclpy.
PARAMETERS = {
    "model_dir": ("", _STR, "D3PRefiner model directory; empty = the shipped default model", None),
    "backend": ("onnx", _STR, f"inference backend: {', '.join(sorted(BACKENDS))}", None),
    "device": ("cpu", _STR, "'cpu' or 'cuda[:N]'; falls back to the CPU with a warning", None),
    "fp16": (False, _BOOL, "half precision on CUDA (ignored on the CPU)", None),
    "steps": (0, _INT, "DDIM steps K; 0 = the model's default", (0, 50)),
    "num_threads": (1, _INT, "CPU threads for inference; 0 = the library default", (0, 256)),
    "input_2d_topic": ("human_pose2d", _STR, "d3p_ros/Skeleton2DArray input", None),
    "input_3d_topic": ("human_pose3d", _STR, "d3p_ros/Skeleton3DArray input (the lifter's)", None),
    "output_topic": ("human_pose3d_refined", _STR, "d3p_ros/Skeleton3DArray output", None),
    "markers_topic": ("human_pose3d_refined/markers", _STR, "visualization_msgs/MarkerArray", None),
    "publish_markers": (True, _BOOL, "publish RViz markers of the refined skeletons", None),
    "debug_image": (False, _BOOL, "publish the refined skeletons drawn over the camera image", None),
    "image_topic": ("camera/image_raw", _STR, "sensor_msgs/Image for debug_image", None),
    "camera_info_topic": ("camera/camera_info", _STR, "sensor_msgs/CameraInfo (K) for debug_image", None),
    "debug_image_topic": ("human_pose3d_refined/debug_image", _STR, "sensor_msgs/Image output", None),
    "input_qos": ("sensor_data", _STR, "input QoS: sensor_data (best effort) or reliable", None),
    "output_qos": ("reliable", _STR, "output QoS: reliable (reaches any subscriber) or sensor_data", None),
    "qos_depth": (10, _INT, "history depth of inputs and outputs", (1, 1000)),
    "sync_queue_size": (10, _INT, "messages per input kept for stamp pairing", (1, 1000)),
    "sync_slop": (0.01, _DBL, "max stamp difference (s) of a 2D/3D pair", (1e-6, 10.0)),
    "mode": ("causal", _STR, "causal: refine each frame on arrival; lagged: once lag_frames later frames exist", None),
    "lag_frames": (0, _INT, "frames of look-ahead in lagged mode (< model window); 0 = window // 2", (0, 10000)),
    "stride": (9, _INT, "lagged mode: frames between one person's refined windows, overlaps blended (a frame waits lag_frames .. lag_frames + stride - 1); 0 = the model's offline stride (model.json)", (0, 10000)),
    "track_timeout": (1.0, _DBL, "forget a person not seen for this long (s, stamp time)", (1e-3, 3600.0)),
    "max_gap": (0.5, _DBL, "a larger stamp gap restarts that person's window (s)", (1e-3, 3600.0)),
    "backward_jump": (0.2, _DBL, "a stamp this much earlier restarts the window (bag loop); less is dropped as out of order (s)", (1e-3, 3600.0)),
    "max_tracks": (32, _INT, "people refined at once; more are dropped and counted", (1, 10000)),
    "max_missing_joints": (6, _INT, "joints with confidence 0 filled from history; more drops the person", (0, NUM_JOINTS)),
    "input_rate": (50.0, _DBL, "expected input rate (Hz): the diagnostics' time budget", (0.1, 10000.0)),
    "diagnostics_period": (1.0, _DBL, "seconds between /diagnostics messages", (0.01, 3600.0)),
    "warn_throttle": (5.0, _DBL, "seconds between repeated warnings of one kind", (0.0, 3600.0)),
    "autostart": (True, _BOOL, "configure and activate on start (no lifecycle manager needed)", None),
}


def _descriptor(name, ptype, description, value_range) -> ParameterDescriptor:
    desc = ParameterDescriptor(name=name, type=ptype, description=description)
    if value_range is not None and ptype == _INT:
        desc.integer_range = [IntegerRange(from_value=value_range[0], to_value=value_range[1], step=1)]
    elif value_range is not None and ptype == _DBL:
        desc.floating_point_range = [FloatingPointRange(from_value=float(value_range[0]),
                                                        to_value=float(value_range[1]), step=0.0)]
    return desc


CHOICES = {"mode": MODES, "backend": tuple(sorted(BACKENDS)), "input_qos": QOS_CHOICES,
           "output_qos": QOS_CHOICES}


def parameter_errors(values: dict) -> list[str]:
    """What is wrong with these parameter values (types and ranges rclpy checks itself).
    Used at configure and for every set."""
    errors = []
    for name, value in values.items():
        if name in CHOICES and value not in CHOICES[name]:
            errors.append(f"parameter '{name}' must be one of {CHOICES[name]}, got {value!r}")
        elif name == "device" and not DEVICE_PATTERN.fullmatch(value):
            errors.append(f"parameter 'device' must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
        elif name.endswith("_topic"):
            try:
                validate_topic_name(value)
            except Exception as err:  # noqa: BLE001 - rclpy's Invalid*NameException
                errors.append(f"parameter '{name}': {value!r} is not a valid topic name ({err})")
        elif name == "model_dir" and value and not Path(value).is_dir():
            errors.append(f"parameter 'model_dir': {value} does not exist or is not a directory")
    return errors


def lag_error(mode: str, lag_frames: int, window: int) -> str | None:
    if mode == "lagged" and lag_frames >= window:
        return f"lag_frames ({lag_frames}) must be smaller than the model's window ({window})"
    return None


def stride_error(stride: int, window: int) -> str | None:
    if not 1 <= stride <= window:
        return f"stride ({stride}) must be between 1 and the model's window ({window})"
    return None


def _qos(kind: str, depth: int) -> QoSProfile:
    if kind == "sensor_data":
        qos = QoSProfile(**{k: getattr(qos_profile_sensor_data, k)
                            for k in ("reliability", "durability", "history")}, depth=depth)
        return qos
    if kind == "reliable":
        return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                          depth=depth)
    raise ValueError(f"QoS must be one of {QOS_CHOICES}, got {kind!r}")


class RefinerNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, ptype, description, value_range) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(name, ptype, description, value_range))
        # registered after the declarations: configure checks the initial values itself
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()                # every counter reported from the start, as 0
        throttle = self.get_parameter("warn_throttle").value
        self._warn = KindThrottle(self.get_logger().warning, throttle)    # one clock per kind
        self._error = KindThrottle(self.get_logger().error, throttle)
        self.marker_ids = MarkerIds()
        self.finished = False       # the shutdown transition ran: main() ends the process
        self._destroyed = False
        self._sync_dropped_seen = 0     # the synchroniser's own count, already in the stats
        self.backend = None
        self._streams: CausalStreams | None = None   # causal mode with a causal model
        self._alive_tracks: list = []
        self.windows = None
        self.sync = None
        self.params: dict = {}
        self._subscriptions_in: list = []
        self._pub_out = self._pub_markers = self._pub_diag = self._diag_timer = None
        self._pub_debug = self.debug_renderer = None
        self._active = False
        # Shared between the executor thread (input) and the inference worker: the windows,
        # the pending "nobody in view" frames and the worker's stop flag.
        self._lock = threading.RLock()
        self._work = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._stop_requested = False
        self._empty_frames: deque = deque()
        self._image_lock = threading.Lock()     # debug images come in on one thread, drawn on another
        self._latency_ms: deque = deque(maxlen=500)   # pair received -> output published
        self._input_ms: deque = deque(maxlen=500)     # one pair: convert + push (executor thread)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from d3p_ros.msg import Skeleton3DArray
        from diagnostic_msgs.msg import DiagnosticArray
        from visualization_msgs.msg import MarkerArray

        self.params = {name: self.get_parameter(name).value for name in PARAMETERS}
        p = self.params
        self._warn.period = self._error.period = p["warn_throttle"]
        self.marker_ids = MarkerIds(max(64, 2 * p["max_tracks"]))
        try:
            errors = parameter_errors(p)
            if errors:
                raise ValueError("; ".join(errors))
            if p["debug_image"] and not cv_bridge_available():
                self.get_logger().warning(
                    "debug_image: cv_bridge is not installed, so only rgb8, bgr8, mono8, rgba8 "
                    "and bgra8 images can be drawn on (install ros-$ROS_DISTRO-cv-bridge for the others)")
            self._load_model()
            window = self.backend.window
            lag = (p["lag_frames"] or window // 2) if p["mode"] == "lagged" else 0
            stride = (p["stride"] or self.backend.stride) if p["mode"] == "lagged" else 1
            error = lag_error(p["mode"], lag, window) or stride_error(stride, window)
            if error:
                raise ValueError(error)
            self.lag, self.stride = lag, stride
            self.windows = WindowManager(window, lag, p["track_timeout"], p["max_gap"],
                                         p["backward_jump"], p["max_tracks"], stride)
        except Exception as err:  # noqa: BLE001 - any failure here must fail the transition
            self.get_logger().error(f"configure failed: {err}")
            self._release_model()
            return TransitionCallbackReturn.FAILURE
        self.sync = make_synchronizer(2, p["sync_queue_size"], p["sync_slop"], self._on_pair)
        out_qos = _qos(p["output_qos"], p["qos_depth"])
        self._pub_out = self.create_lifecycle_publisher(Skeleton3DArray, p["output_topic"], out_qos)
        if p["publish_markers"]:
            self._pub_markers = self.create_lifecycle_publisher(MarkerArray, p["markers_topic"], out_qos)
        if p["debug_image"]:
            from sensor_msgs.msg import Image
            self.debug_renderer = DebugImageRenderer(slop=p["sync_slop"])
            self._pub_debug = self.create_lifecycle_publisher(Image, p["debug_image_topic"], out_qos)
        # /diagnostics also reports while inactive, so it is a plain publisher.
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(p["diagnostics_period"], self._publish_diagnostics)
        b = self.backend
        self.get_logger().info(
            f"configured: model {b.model_dir} (window {b.window}, {b.steps} steps, "
            f"{'causal: streamed frame by frame' if self._streams else 'windowed'}), backend {b.name} "
            f"on {b.device} {b.precision}, mode {p['mode']} (lag {self.lag} frames, stride "
            f"{self.stride}), correction threshold {1000.0 * b.correction_threshold:g} mm, "
            f"synchroniser {self.sync.backend}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from d3p_ros.msg import Skeleton2DArray, Skeleton3DArray

        if self.backend is None:
            try:
                self._load_model()
            except Exception as err:  # noqa: BLE001
                self.get_logger().error(f"activate failed: {err}")
                return TransitionCallbackReturn.FAILURE
        p = self.params
        self._start_worker()
        in_qos = _qos(p["input_qos"], p["qos_depth"])
        self._subscriptions_in = [
            self.create_subscription(Skeleton2DArray, p["input_2d_topic"], self._on_2d, in_qos),
            self.create_subscription(Skeleton3DArray, p["input_3d_topic"], self._on_3d, in_qos),
        ]
        if self.debug_renderer is not None:
            from sensor_msgs.msg import CameraInfo, Image
            self._subscriptions_in += [
                self.create_subscription(Image, p["image_topic"], self._on_image, in_qos),
                self.create_subscription(CameraInfo, p["camera_info_topic"], self._on_camera_info,
                                         in_qos),
            ]
        self._active = True
        self.get_logger().info(f"active: {p['input_2d_topic']} + {p['input_3d_topic']} -> {p['output_topic']}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        self._stop_worker()         # before the model goes: it may be inside a backend call
        with self._lock:
            if self.windows is not None:
                self.windows.clear()
            self._empty_frames.clear()
        if self.sync is not None:
            self.sync.clear()       # stale halves must not pair with input after reactivation
        self._release_model()
        self.get_logger().info("inactive: unsubscribed, worker stopped, model released")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        self._teardown()
        self.finished = True        # a finalized node does nothing more: main() ends the process
        self.get_logger().info("shut down (lifecycle shutdown transition): exiting")
        return super().on_shutdown(state)

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """Rejects invalid values with the reason (`ros2 param set` prints it). Accepted ones
        take effect at the next configure, as the parameters are read there."""
        changed = {prm.name: prm.value for prm in parameters}
        errors = parameter_errors(changed)
        if self.backend is not None and {"mode", "lag_frames"} & set(changed):
            values = {name: self.get_parameter(name).value for name in ("mode", "lag_frames")}
            values.update({k: v for k, v in changed.items() if k in values})
            error = lag_error(values["mode"], values["lag_frames"], self.backend.window)
            errors += [error] if error else []
        if self.backend is not None and changed.get("stride"):
            error = stride_error(changed["stride"], self.backend.window)
            errors += [error] if error else []
        if errors:
            return SetParametersResult(successful=False, reason="; ".join(errors))
        if self._active and set(changed) & set(PARAMETERS):
            self.get_logger().info(f"parameters {sorted(changed)} set: they take effect at the "
                                   "next configure (deactivate, cleanup, configure, activate)")
        return SetParametersResult(successful=True)

    def _teardown(self) -> None:
        self._stop_worker()
        self._release_model()
        self._count_sync_drops()
        self._sync_dropped_seen = 0     # the next configure makes a new synchroniser
        self.windows = self.sync = None
        for pub in (self._pub_out, self._pub_markers, self._pub_debug):
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        if self._pub_diag is not None:
            self.destroy_publisher(self._pub_diag)
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
        self._pub_out = self._pub_markers = self._pub_diag = self._diag_timer = None
        self._pub_debug = self.debug_renderer = None

    def _load_model(self) -> None:
        p = self.params
        model_dir = p["model_dir"]
        if not model_dir:
            from d3p_model.model_files import default_model_dir
            model_dir = str(default_model_dir(causal=p["mode"] == "causal"))
        self.backend = create_backend(p["backend"], model_dir, device=p["device"], fp16=p["fp16"],
                                      steps=p["steps"], num_threads=p["num_threads"],
                                      warn=self.get_logger().warning)
        if self.backend.joint_uncertainty is None:
            self.get_logger().warning(f"model {model_dir} has no calibrated joint uncertainty: "
                                      "the output's uncertainty arrays stay empty")
        if self.backend.causal and p["mode"] == "causal":
            self._streams = CausalStreams(self.backend.stream_step, self.backend.history_shape)

    def _release_model(self) -> None:
        self._streams = None
        if self.backend is not None:
            self.backend.close()
        self.backend = None

    # ------------------------------------------------------------------ inference worker
    def _start_worker(self) -> None:
        if self._worker is not None and self._worker.is_alive():
            return
        self._stop_requested = False
        # daemon: a backend call stuck past the join timeout must not keep the process alive
        self._worker = threading.Thread(target=self._work_loop, name="d3p_inference", daemon=True)
        self._worker.start()

    def stop_worker(self) -> None:
        """Stop and join the inference worker (the node's main() calls it before exiting)."""
        self._stop_worker()

    def _stop_worker(self) -> None:
        worker = self._worker
        if worker is None:
            return
        with self._work:
            self._stop_requested = True
            self._work.notify_all()
        if worker is not threading.current_thread():
            worker.join(WORKER_JOIN_TIMEOUT)
            if worker.is_alive():
                self.get_logger().error(f"inference worker still busy after {WORKER_JOIN_TIMEOUT:.0f} s: "
                                        "abandoned (its result will not be published)")
        self._worker = None

    def _has_work(self) -> bool:
        return self._stop_requested or bool(self._empty_frames) or (
            self.windows is not None and self.windows.has_pending())

    def _take_work(self):
        """Under the lock: every track's newest ready window (arrays copied out), the pending
        "nobody in view" headers, and how many ready frames were superseded."""
        ready, skipped = self.windows.take_ready() if self.windows is not None else ([], 0)
        empty = list(self._empty_frames)
        self._empty_frames.clear()
        if self._streams is not None:
            # the streams of tracks the windows forgot go too (the worker alone touches them)
            self._alive_tracks = list(self.windows.tracks)
        return ready, empty, skipped

    def _work_loop(self) -> None:
        while True:
            with self._work:
                self._work.wait_for(self._has_work)
                if self._stop_requested:
                    return
                ready, empty, skipped = self._take_work()
            start = time.perf_counter()
            try:
                if skipped:
                    self.stats.count("skipped_behind", skipped)
                    self._warn("skipped_behind",
                               f"inference is behind the input: {skipped} frame(s) superseded before "
                               "they could be refined were skipped (only the newest window of each "
                               "person is refined; see skipped_behind in /diagnostics)")
                self._refine_and_publish(ready, empty)
            except Exception as err:  # noqa: BLE001 - keep the worker alive, but say so loudly
                if not self.context.ok():
                    return      # Ctrl-C shut the context down under a running pass: not an error
                self.stats.count("dropped_processing_error", max(1, len(ready)))
                try:
                    self._error("worker_error", f"frame dropped, unexpected error: {err!r}")
                except Exception:  # noqa: BLE001 - the context may be shutting down
                    pass
            if ready or empty:
                self.stats.time((time.perf_counter() - start) * 1000.0)

    # ------------------------------------------------------------------ input
    def _on_2d(self, msg) -> None:
        self.stats.count("received_2d")
        self._add_to_sync(0, msg)

    def _on_3d(self, msg) -> None:
        self.stats.count("received_3d")
        self._add_to_sync(1, msg)

    def _add_to_sync(self, index: int, msg) -> None:
        try:
            self.sync.add(index, msg)
        except Exception as err:  # noqa: BLE001 - a message we cannot even pair (no stamp ...)
            self.report_callback_error(err)

    def report_callback_error(self, err: Exception) -> None:
        """Whatever escaped a callback: counted and logged; the node goes on."""
        self.stats.count("dropped_processing_error")
        self._error("callback_error", f"input dropped, unexpected error in a callback: {err!r}")

    def _on_image(self, msg) -> None:
        with self._image_lock:
            self.debug_renderer.add_image(stamp_to_ns(msg.header.stamp), msg)

    def _on_camera_info(self, msg) -> None:
        with self._image_lock:
            self.debug_renderer.set_camera_info(msg)

    def _on_pair(self, msg_2d, msg_3d) -> None:
        """Never raises: whatever goes wrong with one frame is counted and logged. Cheap:
        converts and pushes into the windows; the worker refines."""
        if not self._active or self.backend is None:
            return
        received = time.perf_counter()
        try:
            self._process(msg_2d, msg_3d, received)
        except Exception as err:  # noqa: BLE001 - keep the node alive, but say so loudly
            self.stats.count("dropped_processing_error")
            self._error("processing_error", f"frame dropped, unexpected error: {err!r}")
        self._input_ms.append((time.perf_counter() - received) * 1000.0)

    def _read_people(self, skeletons, convert, kind: str) -> dict:
        people = {}
        for skeleton in skeletons:
            try:
                person = convert(skeleton)
            except InvalidSkeleton as err:
                self.stats.count(f"invalid_{err.reason}")
                self._warn(f"invalid_{err.reason}", f"invalid {kind} input dropped: {err}")
                continue
            if person.track_id in people:
                self.stats.count("dropped_duplicate_track")
                self._warn("dropped_duplicate_track", f"track {person.track_id} appears twice in "
                           f"one {kind} message: keeping the first")
                continue
            people[person.track_id] = person
        return people

    def _process(self, msg_2d, msg_3d, received: float) -> None:
        self.stats.count("pairs")
        stamp_ns = stamp_to_ns(msg_3d.header.stamp)
        if msg_2d.header.frame_id != msg_3d.header.frame_id:
            # kept (the output carries the 3D header), but two cameras mixed up is worth saying
            self.stats.count("frame_id_mismatch")
            self._warn("frame_id_mismatch", f"2D frame_id {msg_2d.header.frame_id!r} differs from "
                       f"3D frame_id {msg_3d.header.frame_id!r}: paired by stamp anyway, output in "
                       "the 3D frame")
        max_missing = self.params["max_missing_joints"]
        people_2d = self._read_people(msg_2d.skeletons,
                                      lambda s: skeleton2d_to_numpy(s, max_missing), "2D")
        people_3d = self._read_people(msg_3d.skeletons, skeleton3d_to_numpy, "3D")
        unmatched = set(people_2d) ^ set(people_3d)
        if unmatched:
            self.stats.count("dropped_unmatched_track", len(unmatched))
            self._warn("dropped_unmatched_track", f"track ids {sorted(unmatched)} are in only one "
                       "of the 2D/3D messages: dropped")
        # One message's people go in under one lock hold, so the worker never sees half of it.
        with self._work:
            self._push_people(msg_3d, stamp_ns, people_2d, people_3d, received)
            self._work.notify()

    def _push_people(self, msg_3d, stamp_ns: int, people_2d: dict, people_3d: dict,
                     received: float) -> None:
        if self.windows is None:
            return
        # before the pushes: people gone from view must not hold the slots new ones need
        self.stats.count("tracks_timed_out", len(self.windows.prune(stamp_ns)))
        pushed = False
        for track_id in sorted(set(people_2d) & set(people_3d)):
            kp, pose = people_2d[track_id], people_3d[track_id]
            filled = int((~kp.visible).sum())
            if filled:
                self.stats.count("filled_joints", filled)
            status = self.windows.push(track_id, stamp_ns, kp.normalised, kp.visible, pose.relative,
                                       payload=(msg_3d.header, pose, kp, received))
            if not status.accepted:
                self.stats.count(f"dropped_{status.value}")
                self._warn(f"dropped_{status.value}", f"track {track_id}: frame dropped ({status.value})")
                continue
            if status in (Push.NEW_TRACK, Push.NEW_TRACK_EVICTED):
                self.stats.count("tracks_started")
                if status is Push.NEW_TRACK_EVICTED:
                    self.stats.count("tracks_evicted")
                    self._warn("tracks_evicted", f"track {track_id}: new person while max_tracks "
                               f"({self.windows.max_tracks}) are tracked: the least recently seen "
                               "track was forgotten")
            elif status is not Push.ADDED:
                self.stats.count(status.value)
                self._warn(status.value, f"track {track_id}: window restarted ({status.value})")
            pushed = True
        if not pushed and self.lag == 0 and not msg_3d.skeletons:
            # causal: "nobody in view" goes out at the same rate as it came in, in stamp
            # order with the refined frames, so through the worker too
            self._empty_frames.append((msg_3d.header, received))
            if len(self._empty_frames) > MAX_PENDING_EMPTY:
                self._empty_frames.popleft()
                self.stats.count("skipped_behind")

    def _refine_and_publish(self, ready, empty=()) -> None:
        """Runs on the worker: one backend call for all `ready` windows, then publishes them
        and the `empty` ("nobody in view") frames in stamp order."""
        groups = {}  # (stamp, frame_id) -> (header, people, received): lagged outputs may mix stamps
        for header, received in empty:
            groups[(stamp_to_ns(header.stamp), header.frame_id)] = (header, [], received)
        refined = []
        if ready and self._streams is not None:
            refined = self._refine_streams(ready)
        elif ready:
            keypoints = np.stack([w.keypoints_2d for w in ready])
            poses = np.stack([w.pose_3d for w in ready])
            refined = refine_isolated(self.backend, keypoints, poses)
            self.stats.count("inference_batches")
        for window, poses_out in zip(ready, refined):
            if isinstance(poses_out, Exception):
                # only this person: the batch was retried window by window
                self.stats.count("dropped_inference_error", len(window.publish))
                self._error("dropped_inference_error",
                            f"track {window.track_id}: inference failed, skeleton dropped: {poses_out}")
                continue
            if not np.all(np.isfinite(poses_out)):
                # never blended: a NaN would spread to every frame this window overlaps
                self.stats.count("dropped_non_finite_output", len(window.publish))
                self._warn("dropped_non_finite_output",
                           f"track {window.track_id}: model output not finite, dropped")
                continue
            if self._streams is not None:
                published, uncovered = WindowManager.complete_frame(
                    window, poses_out, self.backend.correction_threshold), 0
            else:
                published, uncovered = self.windows.complete(
                    window, poses_out, self.backend.correction_threshold)
            if uncovered:
                self.stats.count("skipped_behind", uncovered)
            for frame, out in published:
                header, pose, kp, received = frame.payload
                _, people, _ = groups.setdefault((stamp_to_ns(header.stamp), header.frame_id),
                                                 (header, [], received))
                people.append((window.track_id, out + pose.root, pose.root_relative,
                               np.minimum(kp.confidence, pose.confidence), kp.pixels))
        for key in sorted(groups):
            header, people, received = groups[key]
            self._publish(header, people)
            self._latency_ms.append((time.perf_counter() - received) * 1000.0)

    def _refine_streams(self, ready) -> list:
        """Causal model: each person's newest frame from its stream (frames the worker
        skipped are fed first, from the window's frames); one call per frame position."""
        self._streams.keep_only(self._alive_tracks)
        gaps = self._streams.restarts_gap
        refined = self._streams.refine(
            [(w.track_id, [(f.seq, f.keypoints_2d, f.pose_3d, f.segment) for f in w.frames])
             for w in ready])
        if self._streams.restarts_gap > gaps:
            self.stats.count("stream_restarts_gap", self._streams.restarts_gap - gaps)
            self._warn("stream_restarts_gap", "inference fell behind by more than the window: "
                       "a person's stream restarted from its recent frames (stream_restarts_gap)")
        self.stats.count("inference_batches")
        return refined

    def _publish(self, header, people) -> None:
        from d3p_ros.msg import Skeleton3D, Skeleton3DArray

        uncertainty = self.backend.joint_uncertainty
        uncertainty = [] if uncertainty is None else uncertainty
        out = Skeleton3DArray(header=header)
        out.skeletons = [fill_skeleton3d(Skeleton3D(header=header), track_id, positions, root_relative,
                                         confidence, uncertainty)
                         for track_id, positions, root_relative, confidence, _ in people]
        self._pub_out.publish(out)
        self.stats.count("published_frames")
        self.stats.count("published_skeletons", len(people))
        if self._pub_markers is not None and people:
            self._pub_markers.publish(skeleton_markers(
                header, [(t, pos, rel) for t, pos, rel, _, _ in people], self.marker_ids))
        if self.debug_renderer is not None and people:
            self._publish_debug_image(header, people)

    def _publish_debug_image(self, header, people) -> None:
        def rgb(track_id):
            c = track_color(track_id)
            return (int(c.r * 255), int(c.g * 255), int(c.b * 255))
        try:
            with self._image_lock:
                image = self.debug_renderer.render(header, stamp_to_ns(header.stamp),
                                                   [(t, pos, rel, px, rgb(t)) for t, pos, rel, _, px in people])
        except ValueError as err:
            self.stats.count("debug_image_errors")
            self._warn("debug_image_errors", f"debug image not drawn: {err}")
            return
        if image is None:
            self.stats.count("debug_image_no_match")
            return
        self._pub_debug.publish(image)
        self.stats.count("debug_images")

    # ------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        if self._pub_diag is None:
            return
        p, b = self.params, self.backend
        with self._lock:    # the worker reads the windows too
            tracks = len(self.windows) if self.windows is not None else 0
            fill = f"{self.windows.fill():.3f}" if self.windows is not None else "0"
        info = {
            "active": self._active,
            "backend": p["backend"],
            "device": b.device if b is not None else "released",
            "precision": b.precision if b is not None else "",
            "model_loaded": b is not None,
            # `is not None`: an empty WindowManager is falsy (it has a length)
            "window": self.windows.window if self.windows is not None else 0,
            "steps": b.steps if b is not None else 0,
            "mode": p["mode"],
            "inference": ("stream" if self._streams is not None else "window") if b is not None else "",
            "lag_frames": self.lag,
            "stride": self.stride,
            "correction_threshold_mm": (round(1000.0 * b.correction_threshold, 3)
                                        if b is not None else ""),
            "tracks": tracks,
            "window_fill": fill,
            "synchronizer": self.sync.backend if self.sync else "",
            "sync_queued": (self.sync.queued() if self.sync else 0),
            "worker_running": self._worker is not None and self._worker.is_alive(),
        }
        # in the node, last 500: pair received -> output published (wait + inference + publish),
        # and the input callbacks' share (convert + push one pair)
        for key, samples in (("node_latency_ms", self._latency_ms), ("input_ms", self._input_ms)):
            values = np.asarray(list(samples), dtype=np.float64)
            for name, q in (("p50", 50), ("p99", 99)):
                info[f"{key}_{name}"] = f"{np.percentile(values, q):.3f}" if values.size else "nan"
        self._count_sync_drops()
        status = self.stats.status(self.diagnostic_name(), info["device"], info,
                                   1000.0 / p["input_rate"])
        self._pub_diag.publish(diagnostic_array(self.get_clock().now().to_msg(), status))

    def diagnostic_name(self) -> str:
        """'d3p_refiner: refiner', or 'cam1/d3p_refiner: refiner' under __ns:=/cam1: each
        instance's own name, so that several refiners do not overwrite each other's status."""
        return f"{self.get_fully_qualified_name().lstrip('/')}: refiner"

    def _count_sync_drops(self) -> None:
        # both synchronisers count what left them unpaired; the stats hold what grew since
        if self.sync is not None:
            dropped = self.sync.dropped
            self.stats.count("dropped_unpaired", dropped - self._sync_dropped_seen)
            self._sync_dropped_seen = dropped

    def destroy_node(self) -> None:
        """Idempotent: main() may get here a second time after a signal cut the first short."""
        if self._destroyed:
            return
        self._destroyed = True
        self._stop_worker()
        super().destroy_node()


def _quiet_signals() -> None:
    """For the rest of the process: a second SIGINT or SIGTERM (ros2 launch forwards one
    after the terminal's) must not interrupt the teardown. rclpy's own handler goes first:
    it triggers the executor's guard condition, which the teardown destroys."""
    try:
        from rclpy.signals import uninstall_signal_handlers
        uninstall_signal_handlers()
    except Exception:  # noqa: BLE001 - already uninstalled
        pass
    for signum in (signal.SIGINT, signal.SIGTERM):
        # SIG_IGN, not a Python function: Python resets those to the default (death by
        # signal, exit code -2) while the interpreter finalizes
        signal.signal(signum, signal.SIG_IGN)


def _spin(node: RefinerNode, executor) -> None:
    """Until Ctrl-C / SIGTERM or the lifecycle shutdown transition. An exception escaping
    a callback is counted and logged, and spinning goes on."""
    while node.context.ok() and not node.finished:
        try:
            executor.spin_once(timeout_sec=0.2)
        except (KeyboardInterrupt, ExternalShutdownException):
            return
        except Exception as err:  # noqa: BLE001 - one bad callback must not end the node
            if not node.context.ok():
                return
            node.report_callback_error(err)
    if node.finished:
        # let the shutdown transition's service reply leave before the node goes
        end = time.monotonic() + 0.3
        while time.monotonic() < end and node.context.ok():
            executor.spin_once(timeout_sec=0.05)


def _shut_down(node: RefinerNode, executor) -> None:
    _quiet_signals()
    for step in (node.stop_worker, executor.shutdown, node.destroy_node, rclpy.try_shutdown):
        try:
            step()
        except (KeyboardInterrupt, ExternalShutdownException):
            pass    # a signal that came before _quiet_signals: finish the teardown anyway
        except Exception as err:  # noqa: BLE001 - the next steps still release what they can
            print(f"d3p_refiner: while shutting down: {err!r}", file=sys.stderr)


def main(args=None) -> int:
    rclpy.init(args=args)
    node = RefinerNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("could not configure (see the error above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("could not activate (see the error above); exiting")
                return 1
        _spin(node, executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass    # Ctrl-C during configure/activate (loading the model)
    finally:
        while True:     # a second Ctrl-C can land before _shut_down quiets the signals
            try:
                _shut_down(node, executor)
                break
            except KeyboardInterrupt:
                continue
    return 0


if __name__ == "__main__":
    sys.exit(main())
