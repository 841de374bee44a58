"""Process supervision, as Sneakers' runner (ServerEngine) does it: the master forks `workers`
children (each creates its own engine after the fork), restarts a child that dies, and handles
signals:

    TERM, INT  graceful stop: children drain (finish work in progress) and exit
    QUIT       immediate stop: children requeue what is unfinished and exit
    USR1       graceful restart of the children
    HUP        immediate restart of the children
    USR2       reload the runner config file, then graceful restart
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Type

from . import configuration as config
from .runner import WorkerGroup
from .worker import Worker

logger = logging.getLogger("cleats")

# Seconds between two restarts of the same slot, so a child that cannot start does not spin.
RESTART_DELAY = 1.0


def _hook(name: str, overrides: Dict[str, Any]) -> Optional[Callable[[], Any]]:
    hooks = overrides.get("hooks") or config.get("hooks") or {}
    hook = hooks.get(name)
    return hook if callable(hook) else None


def run_child(worker_classes: Sequence[Type[Worker]], options: Dict[str, Any]) -> int:
    """The body of a worker process: its own engine, until TERM/INT (drain) or QUIT (at once)."""
    group = WorkerGroup(worker_classes, **options)
    signal.signal(signal.SIGTERM, lambda *_: group.request_stop())
    signal.signal(signal.SIGINT, lambda *_: group.request_stop())
    signal.signal(signal.SIGQUIT, lambda *_: group.request_stop(timeout=0))
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # the master's business
    try:
        group.run()
    except Exception as e:
        logger.error("worker process %d failed: %s", os.getpid(), e)
        return 1
    return 0


class Supervisor:
    def __init__(self, worker_classes: Sequence[Type[Worker]], workers: int = 1,
                 options: Optional[Dict[str, Any]] = None, pid_path: Optional[str] = None,
                 config_file: Optional[str] = None) -> None:
        self.worker_classes = list(worker_classes)
        self.workers = workers
        self.options = dict(options or {})
        self.pid_path = pid_path
        self.config_file = config_file
        self.start_worker_delay = float(config.get("start_worker_delay") or 0)
        self.children: Dict[int, int] = {}  # pid -> slot
        self._last_start: Dict[int, float] = {}
        self._pending: List[int] = []
        self._stopping = False
        if config_file:
            self._load_config_file()

    def _load_config_file(self) -> None:
        """Runs the runner config file: it may set `workers`, `start_worker_delay`, `amqp`,
        `before_fork` and `after_fork`."""
        assert self.config_file
        scope: Dict[str, Any] = {"__file__": self.config_file}
        with open(self.config_file) as f:
            exec(compile(f.read(), self.config_file, "exec"), scope)
        if "workers" in scope:
            self.workers = int(scope["workers"])
        if "start_worker_delay" in scope:
            self.start_worker_delay = float(scope["start_worker_delay"])
        if "amqp" in scope:
            config.configure(amqp=scope["amqp"])
        hooks = dict(self.options.get("hooks") or {})
        for name in ("before_fork", "after_fork"):
            if callable(scope.get(name)):
                hooks[name] = scope[name]
        if hooks:
            self.options["hooks"] = hooks

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._pending.append(signum)

    def run(self) -> int:
        if self.pid_path:
            with open(self.pid_path, "w") as f:
                f.write(f"{os.getpid()}\n")
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                    signal.SIGUSR2, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        logger.info("master %d: starting %d worker process(es)", os.getpid(), self.workers)
        try:
            for slot in range(self.workers):
                if slot:
                    time.sleep(self.start_worker_delay)
                self._spawn(slot)
            while True:
                while self._pending:
                    self._handle(self._pending.pop(0))
                self._reap()
                if self._stopping and not self.children:
                    return 0
                time.sleep(0.05)
        finally:
            if self.pid_path and os.path.exists(self.pid_path):
                os.unlink(self.pid_path)

    def _handle(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            logger.info("master: graceful stop")
            self._stopping = True
            self._signal_children(signal.SIGTERM)
        elif signum == signal.SIGQUIT:
            logger.info("master: immediate stop")
            self._stopping = True
            self._signal_children(signal.SIGQUIT)
        elif signum == signal.SIGUSR1:
            logger.info("master: graceful restart")
            self._signal_children(signal.SIGTERM)
        elif signum == signal.SIGHUP:
            logger.info("master: immediate restart")
            self._signal_children(signal.SIGQUIT)
        elif signum == signal.SIGUSR2:
            logger.info("master: reloading the configuration")
            if self.config_file:
                try:
                    self._load_config_file()
                except Exception as e:
                    logger.error("master: reloading %s failed: %s", self.config_file, e)
                    return
            self._signal_children(signal.SIGTERM)

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                break
            slot = self.children.pop(pid, None)
            if slot is None:
                continue
            if not self._stopping and slot < self.workers:
                logger.info("master: worker process %d exited (status %d); restarting it", pid,
                            os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status)
                wait = self._last_start.get(slot, 0) + RESTART_DELAY - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._spawn(slot)
        # Slots below `workers` with no process (after a reload raised `workers`).
        if not self._stopping:
            for slot in set(range(self.workers)) - set(self.children.values()):
                self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        before = _hook("before_fork", self.options)
        if before:
            before()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1,
                            signal.SIGUSR2, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                after = _hook("after_fork", self.options)
                if after:
                    after()
                options = {k: v for k, v in self.options.items() if k != "hooks"}
                code = run_child(self.worker_classes, options)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                logging.shutdown()
                os._exit(code)
        self.children[pid] = slot
        self._last_start[slot] = time.monotonic()
        logger.info("master: worker process %d started (slot %d)", pid, slot)
