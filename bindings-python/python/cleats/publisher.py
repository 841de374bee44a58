"""`cleats.publish(msg, to_queue=...)`: confirmed publishing on the configured exchange, from any
thread. One engine publisher per process, created on first use (again after fork, and again after
`configure` changed the options)."""

from __future__ import annotations

import os
import threading
from typing import Any, Optional, Tuple

from . import _engine, content
from . import configuration as config

_lock = threading.Lock()
_current: Optional[Tuple[int, str, _engine.Publisher]] = None


def _publisher() -> _engine.Publisher:
    global _current
    options = config.engine_options()
    key = repr(sorted(options.items()))
    with _lock:
        if _current is None or _current[0] != os.getpid() or _current[1] != key:
            _current = (os.getpid(), key, _engine.Publisher(options))
        return _current[2]


def publish(msg: Any, to_queue: Optional[str] = None, **options: Any) -> None:
    """Publishes `msg` and waits for the broker's confirm. `to_queue` (or `routing_key`) is the
    routing key; `content_type` / `content_encoding` pick the serialiser and encoder (a dict with
    `content_type="application/json"` becomes JSON); other options are message properties
    (`headers`, `persistent`, `priority`, `correlation_id`, `reply_to`, `message_id`, `type`,
    `expiration`, `app_id`, `timestamp`, `mandatory`, `exchange`)."""
    if to_queue is not None:
        options["to_queue"] = to_queue
    body = content.to_body(msg, options.get("content_type"), options.get("content_encoding"))
    _publisher().publish(body, options)


class Publisher:
    """A publisher with its own options over the configuration (Sneakers::Publisher)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._engine: Optional[_engine.Publisher] = None
        self._pid = 0

    def publish(self, msg: Any, to_queue: Optional[str] = None, **options: Any) -> None:
        if self._engine is None or self._pid != os.getpid():
            self._engine = _engine.Publisher(config.engine_options(self._options))
            self._pid = os.getpid()
        if to_queue is not None:
            options["to_queue"] = to_queue
        body = content.to_body(msg, options.get("content_type"), options.get("content_encoding"))
        self._engine.publish(body, options)
