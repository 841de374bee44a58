"""Runs worker classes in this process: one engine (created here, so after any fork), and for
each of its pools `threads` Python threads looping pull -> work -> settle. Async workers run their
coroutines on one asyncio loop owned by the process. A pool of async workers only, with no
middleware, gets one feeder thread instead: it takes deliveries while fewer than `threads` are in
flight and hands them to the loop in batches, where each runs as a task (no thread waits on a
coroutine). Otherwise each pulling thread waits for its own coroutine. Either way at most
`threads` coroutines are in flight per pool."""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import threading
import weakref
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Type

from . import _engine, log
from . import configuration as config
from .worker import Worker

logger = logging.getLogger("cleats")

# Groups started and not stopped yet: stopped at interpreter exit, so that no work thread is
# still waiting inside the engine while Python shuts down.
_running: "weakref.WeakSet[WorkerGroup]" = weakref.WeakSet()


@atexit.register
def _stop_running_groups() -> None:
    for group in list(_running):
        try:
            group.stop()
        except Exception as e:  # the process is exiting: report, do not raise
            logger.warning("stopping workers at exit failed: %s", e)


class WorkerGroup:
    """`WorkerGroup([EmailWorker, ...], threads=5).run()` consumes until stopped."""

    def __init__(self, worker_classes: Sequence[Type[Worker]], **options: Any) -> None:
        if not worker_classes:
            raise ValueError("no workers to run: pass at least one cleats.Worker subclass")
        for cls in worker_classes:
            if not cls.queue_name:
                raise ValueError(f"{cls.__name__} has no queue: set queue_name or use @cleats.from_queue")
        by_name: Dict[str, Type[Worker]] = {}
        for cls in worker_classes:
            # The name is the engine's key (metrics, logs, dispatch): it must be unique.
            if by_name.setdefault(cls.__name__, cls) is not cls:
                raise ValueError(f"two worker classes are named {cls.__name__} "
                                 f"({by_name[cls.__name__].__module__} and {cls.__module__}): rename one")
        self.worker_classes = list(worker_classes)
        self.options = options
        self.engine: Optional[_engine.Engine] = None
        self.workers: Dict[str, Worker] = {}
        self._threads: List[threading.Thread] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._stop_requested = threading.Event()
        # Set once the engine has stopped: a feeder waiting for a free slot leaves.
        self._engine_stopped = threading.Event()
        # Tasks of the feeders' deliveries: the loop only keeps weak references.
        self._tasks: "Set[asyncio.Task[str]]" = set()
        self._stop_timeout: Optional[float] = None
        self._stopped = False

    def start(self) -> None:
        """Creates the engine, connects, declares, starts consuming and the work threads."""
        log.start_forwarding()
        engine = _engine.Engine(config.engine_options(self.options))
        if any(cls.is_async() for cls in self.worker_classes):
            self._start_loop()
        for cls in self.worker_classes:
            layer = dict(cls.engine_layer())
            layer.update({k: v for k, v in self.options.items() if k in ("threads", "prefetch")})
            handle = engine.add_worker(cls.__name__, cls.queue_name or "", layer)
            worker = cls()
            worker._attach(handle, self._loop)
            self.workers[cls.__name__] = worker
        engine.start()
        self.engine = engine
        _running.add(self)
        for i, pool in enumerate(engine.pools()):
            if all(self.workers[n]._runs_on_loop() for n in pool.worker_names):
                thread = threading.Thread(
                    target=self._feed, args=(pool,), name=f"cleats-feed-{i}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
                continue
            for t in range(pool.threads):
                thread = threading.Thread(
                    target=self._pull, args=(pool,), name=f"cleats-work-{i}-{t}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        logger.info("consuming %s with %d thread(s)", ", ".join(
            f"{c.queue_name} ({c.__name__})" for c in self.worker_classes), len(self._threads))

    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(target=loop.run_forever, name="cleats-asyncio", daemon=True)
        self._loop_thread.start()

    def _pull(self, pool: _engine.Pool) -> None:
        names = pool.worker_names
        # A pool of one worker (no share_threads) needs no lookup per message.
        only = self.workers[names[0]] if len(names) == 1 else None
        while True:
            delivery = pool.next(0.1)
            if delivery is False:
                return
            if delivery is None:
                continue
            worker = only if only is not None else self.workers[delivery.worker_name]
            try:
                worker._process(delivery)
            except Exception:
                # Only a failing metrics object or the like: the message was settled or is left
                # to the stop's requeue.
                logger.exception("%s: processing a message failed", delivery.worker_name)

    def _feed(self, pool: _engine.Pool) -> None:
        """Takes deliveries while fewer than `threads` are in flight (a slot each, given back
        when its task ends) and hands them to the loop in batches: one wake-up of the loop per
        batch instead of two thread hand-offs per message."""
        loop = self._loop
        assert loop is not None
        slots = threading.Semaphore(pool.threads)
        while True:
            if not slots.acquire(timeout=0.1):
                if self._engine_stopped.is_set():
                    return  # every slot held by work that outlived the stop deadline
                continue
            delivery = pool.next(0.1)
            if delivery is None or delivery is False:
                slots.release()
                if delivery is False:
                    return
                continue
            batch = [delivery]
            stopping = False
            # Whatever else is ready, without waiting, while slots are free.
            while slots.acquire(blocking=False):
                more = pool.next(0)
                if more is None or more is False:
                    slots.release()
                    stopping = more is False
                    break
                batch.append(more)
            try:
                loop.call_soon_threadsafe(self._start_tasks, batch, slots)
            except RuntimeError:  # the loop is closed: nothing will run them
                for delivery in batch:
                    _requeue(delivery)
                    slots.release()
            if stopping:
                return

    def _start_tasks(self, batch: List[_engine.Delivery], slots: threading.Semaphore) -> None:
        """On the loop: a task per delivery of a feeder's batch."""
        assert self._loop is not None
        for delivery in batch:
            try:
                worker = self.workers[delivery.worker_name]
                task = self._loop.create_task(worker._process_async(delivery))
            except Exception:
                logger.exception("%s: starting work on a message failed", delivery.worker_name)
                _requeue(delivery)
                slots.release()
                continue
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._task_done, delivery, slots))

    def _task_done(self, delivery: _engine.Delivery, slots: threading.Semaphore,
                   task: "asyncio.Task[str]") -> None:
        self._tasks.discard(task)
        slots.release()
        if task.cancelled():
            _requeue(delivery)  # stopped before its settle
            return
        error = task.exception()
        if error is not None:
            # Only a failing metrics object or the like; if it came before the settle, the
            # message goes back on the queue.
            logger.error("%s: processing a message failed", delivery.worker_name, exc_info=error)
            _requeue(delivery)

    def request_stop(self, timeout: Optional[float] = None) -> None:
        """Asks `run` to stop (safe from a signal handler): gracefully, or with `timeout=0`
        at once (everything unfinished goes back on the queue)."""
        if timeout is not None:
            self._stop_timeout = timeout
        self._stop_requested.set()

    def stop(self, timeout: Optional[float] = None) -> Tuple[bool, int]:
        """Graceful stop: no new messages, work in progress finishes (up to `timeout`, default
        `stop_timeout`), the rest goes back on the queue. Returns (drained, requeued)."""
        if self.engine is None or self._stopped:
            return True, 0
        self._stopped = True
        _running.discard(self)
        report = self.engine.stop(timeout)
        self._engine_stopped.set()
        # The engine has drained (or requeued) everything: the threads are leaving their loop,
        # unless a `work` outlived the deadline; that one is left behind (daemon thread).
        for thread in self._threads:
            thread.join(timeout=2.0)
            if thread.is_alive():
                logger.warning("%s is still running work after the stop deadline", thread.name)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
        logger.info("stopped (drained: %s, requeued: %d)", report[0], report[1])
        return report

    def run(self) -> None:
        """Starts, then consumes until `request_stop` or Ctrl-C, then stops gracefully."""
        self.start()
        try:
            while not self._stop_requested.wait(0.1):
                pass
        except KeyboardInterrupt:
            logger.info("interrupted: stopping gracefully")
        finally:
            self.stop(self._stop_timeout)


def _requeue(delivery: _engine.Delivery) -> None:
    """Settles a delivery no work will finish, unless it was settled already."""
    try:
        delivery.settle("requeue")
    except Exception as e:  # usually: its work settled it before failing
        logger.debug("%s: not requeued: %s", delivery.worker_name, e)


def run(*worker_classes: Type[Worker], **options: Any) -> None:
    """Runs the given workers in this process until interrupted (Ctrl-C stops gracefully)."""
    WorkerGroup(worker_classes, **options).run()
