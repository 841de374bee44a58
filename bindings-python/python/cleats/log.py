"""The engine's log lines go to Python's `logging` (logger "cleats"). No Rust thread calls
Python: a daemon thread pulls records from the engine with the GIL released and logs them."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from typing import Any, Optional

LOGGER_NAME = "cleats"
# Sneakers' production format: `<utc iso8601> p-<pid> t-<thread id> <SEVERITY>: <message>`.
FORMAT = "%(asctime)sZ p-%(process)d t-%(thread)x %(levelname)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"

_LEVELS = {
    "ERROR": logging.ERROR,
    "WARN": logging.WARNING,
    "INFO": logging.INFO,
    "DEBUG": logging.DEBUG,
    "TRACE": logging.DEBUG,
}

_lock = threading.Lock()
_forwarder: Optional[threading.Thread] = None
_forwarder_pid = 0
_stop = threading.Event()


def logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def _engine_level(level: int) -> str:
    if level <= logging.DEBUG:
        return "debug"
    if level <= logging.INFO:
        return "info"
    if level <= logging.WARNING:
        return "warn"
    return "error"


def start_forwarding() -> None:
    """Forwards the engine's records from now on (once per process, again after fork)."""
    global _forwarder, _forwarder_pid
    from . import _engine

    with _lock:
        # The level may have changed since the last start: the engine filters by it.
        _engine.install_logging(_engine_level(logger().getEffectiveLevel()))
        if _forwarder is not None and _forwarder_pid == os.getpid() and _forwarder.is_alive():
            return
        _stop.clear()
        _forwarder = threading.Thread(target=_forward, name="cleats-log", daemon=True)
        _forwarder_pid = os.getpid()
        _forwarder.start()


def _forward() -> None:
    from . import _engine

    log = logger()
    while not _stop.is_set():
        record = _engine.next_log_record(0.2)
        if record is not None:
            level, target, message = record
            log.log(_LEVELS.get(level, logging.INFO), "%s", message, extra={"engine_target": target})


@atexit.register
def stop_forwarding() -> None:
    """Ends the forwarder before the interpreter shuts down (it must not be inside the engine
    then)."""
    _stop.set()
    thread = _forwarder
    if thread is not None and thread.is_alive() and _forwarder_pid == os.getpid():
        thread.join(timeout=2)


def configure_from(target: Any, level: Any = None) -> None:
    """Applies the `log` / `log_level` options: a path (a file), "STDOUT"/"STDERR", a stream, or a
    `logging.Logger` whose handlers are used as they are."""
    log = logger()
    if level is not None:
        log.setLevel(level.upper() if isinstance(level, str) else level)
    if target is None:
        return
    if isinstance(target, logging.Logger):
        log.handlers = list(target.handlers)
        log.propagate = False
        return
    if target == "STDOUT":
        handler: logging.Handler = logging.StreamHandler(sys.stdout)
    elif target == "STDERR":
        handler = logging.StreamHandler(sys.stderr)
    elif isinstance(target, (str, os.PathLike)):
        handler = logging.FileHandler(os.fspath(target))
    else:
        handler = logging.StreamHandler(target)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    log.handlers = [handler]
    log.propagate = False
