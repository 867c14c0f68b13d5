"""A stand-in for ROS 2's Python `message_filters`, for tests where it cannot be installed.

The interface the node uses (SimpleFilter; ApproximateTimeSynchronizer(fs, queue_size, slop)
with `registerCallback` and one {stamp_ns: msg} dict per input in `queues`) and the queue
handling of the real one: a full queue forgets its smallest stamp, nothing is counted, a
message forgotten on arrival is not matched. Written for these tests, not copied.
tests/test_sync.py loads it by path; node tests put this directory on PYTHONPATH, so that
the node takes it for message_filters.
"""

import itertools
import threading


class SimpleFilter:
    def __init__(self):
        self.callbacks = []

    def registerCallback(self, cb, *args):          # noqa: N802 - message_filters' name
        self.callbacks.append((cb, args))

    def signalMessage(self, *msgs):                 # noqa: N802
        for cb, args in self.callbacks:
            cb(*(msgs + args))


class ApproximateTimeSynchronizer(SimpleFilter):
    def __init__(self, fs, queue_size, slop):
        super().__init__()
        self.queue_size, self.slop_ns = queue_size, int(slop * 1e9)
        self.queues = [{} for _ in fs]
        self.lock = threading.Lock()
        for i, f in enumerate(fs):
            f.registerCallback(self.add, i)

    def add(self, msg, index):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            queue = self.queues[index]
            queue[stamp] = msg
            while len(queue) > self.queue_size:
                del queue[min(queue)]
            if stamp not in queue:
                return
            near = []
            for i in range(len(self.queues)):
                if i == index:
                    continue
                cand = sorted((s for s in self.queues[i] if abs(s - stamp) <= self.slop_ns),
                              key=lambda s: abs(s - stamp))
                if not cand:
                    return
                near.append(cand)
            for combo in itertools.product(*near):
                stamps = list(combo)
                stamps.insert(index, stamp)
                if max(stamps) - min(stamps) < self.slop_ns:
                    self.signalMessage(*[q.pop(s) for q, s in zip(self.queues, stamps)])
                    return
