"""The node's counters and timings, and their diagnostic_msgs/DiagnosticStatus form.

Counters only grow (since the node was activated the first time); the status level turns
WARN when something was dropped or invalid since the previous report, when inference fell
behind the input (frames skipped since the previous report), or when the p95 processing
time exceeds the frame budget.
"""

from __future__ import annotations

import resource
import threading
from collections import Counter, deque

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

# Counter names that mean input was lost; their sum is reported as "dropped_total".
DROP_COUNTERS = (
    "invalid_non_finite", "invalid_wrong_joint_count", "invalid_wrong_layout",
    "invalid_bad_image_size", "invalid_too_many_missing_joints",
    "invalid_implausible_pose", "invalid_implausible_keypoints",
    "dropped_duplicate_stamp", "dropped_out_of_order_stamp", "dropped_track_limit",
    "dropped_unmatched_track", "dropped_duplicate_track", "dropped_unpaired",
    "dropped_inference_error", "dropped_non_finite_output", "dropped_processing_error",
)
# The other counters. All are in every report from the start, as 0 until they move, so a
# monitor can tell "nothing happened" from "not reported".
COUNTERS = (
    "received_2d", "received_3d", "pairs", "inference_batches", "published_frames",
    "published_skeletons", "skipped_behind", "filled_joints", "frame_id_mismatch",
    "tracks_started", "tracks_evicted", "tracks_timed_out", "reset_gap", "reset_backward_jump",
    "debug_images", "debug_image_no_match", "debug_image_errors",
    "stream_restarts_gap",      # causal model: a person's history restarted, frames missed
)


def rss_mb() -> float:
    """Current resident memory of this process in MiB (Linux /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class NodeStats:
    def __init__(self, timing_samples: int = 500):
        self.counters: Counter = Counter({name: 0 for name in COUNTERS + DROP_COUNTERS})
        self.processing_ms: deque = deque(maxlen=timing_samples)
        self._lock = threading.Lock()
        self._dropped_at_last_report = 0
        self._skipped_at_last_report = 0

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def time(self, milliseconds: float) -> None:
        with self._lock:
            self.processing_ms.append(float(milliseconds))

    def dropped_total(self) -> int:
        return sum(self.counters[name] for name in DROP_COUNTERS)

    def status(self, name: str, hardware_id: str, info: dict, frame_budget_ms: float) -> DiagnosticStatus:
        with self._lock:
            counters = dict(self.counters)
            times = np.asarray(self.processing_ms, dtype=np.float64)
        dropped = sum(counters.get(n, 0) for n in DROP_COUNTERS)
        values = {**{k: str(v) for k, v in info.items()}}
        if times.size:
            values.update(processing_ms_mean=f"{times.mean():.3f}",
                          processing_ms_p95=f"{np.percentile(times, 95):.3f}",
                          processing_ms_max=f"{times.max():.3f}")
        else:
            values.update(processing_ms_mean="nan", processing_ms_p95="nan", processing_ms_max="nan")
        values["dropped_total"] = str(dropped)
        values["rss_mb"] = f"{rss_mb():.1f}"
        for key in sorted(set(counters) | set(DROP_COUNTERS)):
            values[key] = str(counters.get(key, 0))
        level, message = DiagnosticStatus.OK, "refining"
        if not info.get("active", True):
            level, message = DiagnosticStatus.WARN, "inactive"
        elif dropped > self._dropped_at_last_report:
            level = DiagnosticStatus.WARN
            message = f"{dropped - self._dropped_at_last_report} inputs dropped since last report"
        elif counters.get("skipped_behind", 0) > self._skipped_at_last_report:
            level = DiagnosticStatus.WARN
            message = (f"inference behind the input: {counters['skipped_behind'] - self._skipped_at_last_report}"
                       " frames skipped since last report")
        elif times.size and np.percentile(times, 95) > frame_budget_ms:
            level, message = DiagnosticStatus.WARN, "processing slower than the input rate"
        self._dropped_at_last_report = dropped
        self._skipped_at_last_report = counters.get("skipped_behind", 0)
        return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])


def diagnostic_array(stamp, status: DiagnosticStatus) -> DiagnosticArray:
    out = DiagnosticArray()
    out.header.stamp = stamp
    out.status = [status]
    return out


def values_of(status) -> dict:
    """DiagnosticStatus -> {key: value}; for tests and tools reading /diagnostics."""
    return {kv.key: kv.value for kv in status.values}
