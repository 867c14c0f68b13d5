"""Pair messages of several topics by header stamp (approximate time).

`make_synchronizer` uses `message_filters.ApproximateTimeSynchronizer` where the ROS 2
`message_filters` package is installed and `ApproximateStampSynchronizer` (ours) otherwise.
Both are fed the same way (`add(input_index, msg)`), call `callback(msg_0, ..., msg_n)`,
pair the same messages and count the same way.

Pairing semantics (message_filters' Python ApproximateTimeSynchronizer, except for which
message a full queue forgets):
- one queue per input, keyed by stamp (a second message with the same stamp replaces the
  first, which counts as dropped);
- a full queue (`queue_size`) makes room for an arriving message by forgetting the queued
  stamp farthest from the arriving one (counted as dropped). With stamps that only grow
  that is the oldest, as in message_filters; unlike message_filters' "smallest stamp",
  it also clears out far-future leftovers and the old stamps after a source restarted at
  an earlier time, which would otherwise hold the queue for good, and it never forgets the
  message that just arrived;
- when a message arrives, the other queues' stamps within `slop` of it are candidates,
  tried nearest first; the first combination whose spread (max - min stamp) is below
  `slop` is emitted and its messages leave their queues.

Counting: `received == num_inputs * pairs + dropped + queued()` at all times, so every
message is either paired, waiting, or counted as dropped (`dropped_unpaired` in the node).
"""

from __future__ import annotations

import itertools
import threading
from typing import Callable


def _stamp_ns(msg) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _slop_ns(slop: float) -> int:
    # truncated like rclpy's Duration(seconds=slop), which message_filters compares with
    return int(slop * 1e9)


def _check_arguments(num_inputs: int, queue_size: int, slop: float) -> None:
    if num_inputs < 2:
        raise ValueError("a synchroniser needs at least two inputs")
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    if not slop > 0:
        raise ValueError(f"slop must be > 0 seconds, got {slop}")


def make_room(queue: dict, stamp: int, queue_size: int) -> int:
    """Before `stamp` goes into `queue`: forget what must go; returns how many went."""
    if stamp in queue:
        return 0        # the new message replaces this one (counted by the caller)
    forgotten = 0
    while len(queue) >= queue_size:
        # farthest from the new stamp; between two as far, the earlier
        del queue[max(queue, key=lambda s: (abs(s - stamp), -s))]
        forgotten += 1
    return forgotten


class ApproximateStampSynchronizer:
    """The project's own approximate-time synchroniser (no ROS dependency)."""

    backend = "d3p"

    def __init__(self, num_inputs: int, queue_size: int, slop: float, callback: Callable):
        _check_arguments(num_inputs, queue_size, slop)
        self.queue_size = int(queue_size)
        self.slop_ns = _slop_ns(slop)
        self.callback = callback
        self.queues: list[dict[int, object]] = [{} for _ in range(num_inputs)]
        self.received = 0
        self.pairs = 0
        self.dropped = 0        # left a queue without a partner: pushed out, replaced, cleared
        self._lock = threading.Lock()

    def add(self, index: int, msg) -> None:
        stamp = _stamp_ns(msg)
        with self._lock:
            self.received += 1
            queue = self.queues[index]
            self.dropped += make_room(queue, stamp, self.queue_size) + (stamp in queue)
            queue[stamp] = msg
            msgs = self._match(index, stamp)
            if msgs is not None:
                self.pairs += 1
        if msgs is not None:
            self.callback(*msgs)

    def _match(self, index: int, stamp: int):
        candidates = []
        for other, other_queue in enumerate(self.queues):
            if other == index:
                continue
            # nearest first; Python's sort is stable, so ties keep the queue's order
            near = sorted((s for s in other_queue if abs(s - stamp) <= self.slop_ns),
                          key=lambda s: abs(s - stamp))
            if not near:
                return None
            candidates.append(near)
        for combo in itertools.product(*candidates):
            stamps = list(combo)
            stamps.insert(index, stamp)
            if max(stamps) - min(stamps) < self.slop_ns:
                return [self.queues[i].pop(s) for i, s in enumerate(stamps)]
        return None

    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self.queues)

    def clear(self) -> None:
        with self._lock:
            for queue in self.queues:
                self.dropped += len(queue)
                queue.clear()


class MessageFiltersSynchronizer:
    """`message_filters.ApproximateTimeSynchronizer`, fed through SimpleFilter inputs.

    message_filters counts nothing, and its full queue forgets the smallest stamp. This
    wrapper makes room in the target queue itself before each message goes in (the same
    rule as ours), so message_filters never has to forget anything, and counts by
    conservation: dropped = received - num_inputs * pairs - queued. `module` replaces the
    imported message_filters (tests).
    """

    backend = "message_filters"

    def __init__(self, num_inputs: int, queue_size: int, slop: float, callback: Callable,
                 module=None):
        _check_arguments(num_inputs, queue_size, slop)
        if module is None:
            import message_filters as module
        self.callback = callback
        self.num_inputs = int(num_inputs)
        self.queue_size = int(queue_size)
        self._inputs = [module.SimpleFilter() for _ in range(num_inputs)]
        self._sync = module.ApproximateTimeSynchronizer(self._inputs, queue_size, slop)
        self._sync.registerCallback(self._on_match)
        self._matched: list = []
        self.received = 0
        self.pairs = 0
        self._lock = threading.Lock()

    def _on_match(self, *msgs) -> None:
        # called by message_filters under its own lock: only note it, call back outside
        self._matched.append(msgs)

    def add(self, index: int, msg) -> None:
        with self._lock:
            self.received += 1
            make_room(self._sync.queues[index], _stamp_ns(msg), self.queue_size)
            self._inputs[index].signalMessage(msg)
            matched, self._matched = self._matched, []
            self.pairs += len(matched)
        for msgs in matched:
            self.callback(*msgs)

    @property
    def dropped(self) -> int:
        with self._lock:
            queued = sum(len(q) for q in self._sync.queues)
            return self.received - self.num_inputs * self.pairs - queued

    def queued(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._sync.queues)

    def clear(self) -> None:
        with self._lock:
            for queue in self._sync.queues:
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
