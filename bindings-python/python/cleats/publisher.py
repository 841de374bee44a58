"""`cleats.publish(msg, to_queue=...)`: confirmed publishing on the configured exchange, from any
thread. One engine publisher per process, created on first use (again after fork, and again after
`configure` changed the options)."""

from __future__ import annotations

import os
import threading
from typing import Any, Iterable, Optional, Tuple

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


def publish_batch(msgs: Iterable[Any], to_queue: Optional[str] = None, **options: Any) -> None:
    """Publishes every message of `msgs` with the same options, then waits once for all the
    broker's confirms: far faster than `publish` in a loop, which waits for each confirm in turn.
    Raises the first failure after every message was attempted (so a retry may publish some
    twice, as with any at-least-once publish)."""
    if to_queue is not None:
        options["to_queue"] = to_queue
    _publisher().publish_batch(_bodies(msgs, options), options)


def _bodies(msgs: Iterable[Any], options: dict) -> list:
    content_type, content_encoding = options.get("content_type"), options.get("content_encoding")
    return [content.to_body(msg, content_type, content_encoding) for msg in msgs]


class Publisher:
    """A publisher with its own options over the configuration (Sneakers::Publisher)."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._engine: Optional[_engine.Publisher] = None
        self._pid = 0

    def publish(self, msg: Any, to_queue: Optional[str] = None, **options: Any) -> None:
        if to_queue is not None:
            options["to_queue"] = to_queue
        body = content.to_body(msg, options.get("content_type"), options.get("content_encoding"))
        self._native().publish(body, options)

    def publish_batch(self, msgs: Iterable[Any], to_queue: Optional[str] = None,
                      **options: Any) -> None:
        """`cleats.publish_batch` with this publisher's options."""
        if to_queue is not None:
            options["to_queue"] = to_queue
        self._native().publish_batch(_bodies(msgs, options), options)

    def _native(self) -> _engine.Publisher:
        if self._engine is None or self._pid != os.getpid():
            self._engine = _engine.Publisher(config.engine_options(self._options))
            self._pid = os.getpid()
        return self._engine
