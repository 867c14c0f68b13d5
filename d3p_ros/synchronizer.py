"""Pair messages of several topics by header stamp (approximate time).

`make_synchronizer` uses `message_filters.ApproximateTimeSynchronizer` where the ROS 2
`message_filters` package is installed and `ApproximateStampSynchronizer` (ours) otherwise.
Both are fed the same way (`add(input_index, msg)`) and call `callback(msg_0, ..., msg_n)`.

Pairing semantics (those of message_filters' Python ApproximateTimeSynchronizer):
- one queue per input, keyed by stamp (a second message with the same stamp replaces the
  first); a queue longer than `queue_size` forgets its oldest stamp;
- when a message arrives, the other queues' stamps within `slop` of it are candidates,
  tried nearest first; the first combination whose spread (max - min stamp) is below
  `slop` is emitted and its messages leave their queues;
- older messages that were never paired stay until pushed out by `queue_size`.
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable


def _stamp_ns(msg) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ApproximateStampSynchronizer:
    """The project's own approximate-time synchroniser (no ROS dependency)."""

    backend = "d3p"

    def __init__(self, num_inputs: int, queue_size: int, slop: float, callback: Callable):
        if num_inputs < 2:
            raise ValueError("a synchroniser needs at least two inputs")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop > 0:
            raise ValueError(f"slop must be > 0 seconds, got {slop}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(slop * 1e9))
        self.callback = callback
        self.queues: list[dict[int, object]] = [{} for _ in range(num_inputs)]
        self.evicted = 0        # messages pushed out of a full queue without a partner
        self._lock = threading.Lock()

    def add(self, index: int, msg) -> None:
        stamp = _stamp_ns(msg)
        with self._lock:
            queue = self.queues[index]
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
                self.evicted += 1
            candidates = []
            for other, other_queue in enumerate(self.queues):
                if other == index:
                    continue
                near = sorted((abs(s - stamp), s) for s in other_queue if abs(s - stamp) <= self.slop_ns)
                if not near:
                    return
                candidates.append([s for _, s in near])
            matched = None
            for combo in itertools.product(*candidates):
                stamps = list(combo)
                stamps.insert(index, stamp)
                if max(stamps) - min(stamps) < self.slop_ns:
                    matched = stamps
                    break
            if matched is None:
                return
            msgs = [self.queues[i].pop(s) for i, s in enumerate(matched)]
        self.callback(*msgs)

    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self.queues)

    def clear(self) -> None:
        with self._lock:
            for queue in self.queues:
                queue.clear()


class MessageFiltersSynchronizer:
    """`message_filters.ApproximateTimeSynchronizer`, fed through SimpleFilter inputs."""

    backend = "message_filters"

    def __init__(self, num_inputs: int, queue_size: int, slop: float, callback: Callable):
        import message_filters
        self._inputs = [message_filters.SimpleFilter() for _ in range(num_inputs)]
        self._sync = message_filters.ApproximateTimeSynchronizer(self._inputs, queue_size, slop)
        self._sync.registerCallback(callback)
        self.evicted = None     # message_filters does not report it

    def add(self, index: int, msg) -> None:
        self._inputs[index].signalMessage(msg)

    def queued(self) -> int | None:
        queues = getattr(self._sync, "queues", None)
        return None if queues is None else sum(len(q) for q in queues)

    def clear(self) -> None:
        for queue in getattr(self._sync, "queues", []):
            queue.clear()


def message_filters_available() -> bool:
    try:
        import message_filters
    except ImportError:
        return False
    return hasattr(message_filters, "ApproximateTimeSynchronizer") and hasattr(message_filters, "SimpleFilter")


def make_synchronizer(num_inputs: int, queue_size: int, slop: float, callback: Callable,
                      prefer_message_filters: bool = True):
    if prefer_message_filters and message_filters_available():
        return MessageFiltersSynchronizer(num_inputs, queue_size, slop, callback)
    return ApproximateStampSynchronizer(num_inputs, queue_size, slop, callback)
