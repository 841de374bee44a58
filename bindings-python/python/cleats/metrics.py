"""Metrics objects: anything with `increment(name)` and `timing(name, seconds)`. The names are the
engine's (Sneakers'): `work.<Class>.started`, `work.<Class>.time`,
`work.<Class>.handled.<ack|reject|requeue|error|noop>` (only when acking), `work.<Class>.ended`.
They are sent from the Python thread that ran `work`."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Dict, List, Tuple


class NullMetrics:
    def increment(self, name: str) -> None:
        pass

    def timing(self, name: str, seconds: float) -> None:
        pass


class LoggingMetrics:
    """Logs every metric at INFO on the `cleats` logger."""

    def increment(self, name: str) -> None:
        logging.getLogger("cleats").info("INC: %s", name)

    def timing(self, name: str, seconds: float) -> None:
        logging.getLogger("cleats").info("TIME: %s %.6f", name, seconds)


class MemoryMetrics:
    """Keeps counts and timings in memory (handy in tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.timings: Dict[str, List[float]] = {}
        self.events: List[Tuple[str, str]] = []

    def increment(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1
            self.events.append(("increment", name))

    def timing(self, name: str, seconds: float) -> None:
        with self._lock:
            self.timings.setdefault(name, []).append(seconds)
            self.events.append(("timing", name))
