"""Warnings throttled per kind of problem, not per line of code.

rclpy's `throttle_duration_sec` throttles per call site: one site that reports several kinds
of bad input (NaN here, a wrong joint count there) would log the first kind and then hide
every other kind for the whole period. `KindThrottle` keeps one clock per kind instead.
"""

from __future__ import annotations

import threading
import time
from typing import Callable


class KindThrottle:
    def __init__(self, log: Callable[[str], None], period: float,
                 clock: Callable[[], float] = time.monotonic):
        self._log = log
        self.period = float(period)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()     # the executor thread and the worker both warn

    def __call__(self, kind: str, text: str) -> bool:
        """Log `text` unless `kind` was logged less than `period` ago; True if logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            text += f" ({suppressed} more like it since the last such warning)"
        self._log(text)
        return True
