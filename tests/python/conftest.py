"""Shared helpers for the Python tests. They run against the real broker at AMQP_URL (default
amqp://guest:guest@127.0.0.1:5672/%2f) and inspect it with rabbitmqctl; with no broker they fail,
they never skip."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import time
from typing import Callable, Iterator, List, Tuple

import pytest

import cleats
from cleats import content

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
_counter = itertools.count()


def rabbitmqctl(*args: str) -> str:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    out = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def counts(queue: str) -> Tuple[int, int]:
    """(ready, unacknowledged) messages of `queue`."""
    for line in rabbitmqctl("list_queues", "--no-table-headers", "name", "messages_ready",
                            "messages_unacknowledged").splitlines():
        parts = line.split("\t")
        if parts and parts[0] == queue:
            return int(parts[1]), int(parts[2])
    raise AssertionError(f"queue {queue} does not exist")


def consumers(queue: str) -> int:
    """Consumers of `queue` (0 when it does not exist yet)."""
    for line in rabbitmqctl("list_queues", "--no-table-headers", "name", "consumers").splitlines():
        parts = line.split("\t")
        if parts and parts[0] == queue:
            return int(parts[1])
    return 0


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` for a child that must take Ctrl-C: a shell starts background jobs with SIGINT
    ignored, children inherit that, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Names:
    """Unique queue names for one test, deleted (with Maxretry's exchanges) afterwards."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.queues: List[str] = []
        self.exchanges: List[str] = []

    def queue(self, name: str = "q") -> str:
        q = f"cleats-pytest-{self.test}-{name}-{os.getpid()}-{time.time_ns()}-{next(_counter)}"
        self.queues.append(q)
        return q

    def maxretry(self, q: str) -> None:
        self.queues += [f"{q}-retry", f"{q}-error"]
        self.exchanges += [f"{q}-retry", f"{q}-error", f"{q}-retry-requeue"]

    def cleanup(self) -> None:
        for q in self.queues:
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_queue", q)
        for x in self.exchanges:
            with contextlib.suppress(Exception):
                rabbitmqctl("eval", f'rabbit_exchange:delete(rabbit_misc:r(<<"/">>, exchange, '
                                    f'<<"{x}">>), false, <<"cleats-tests">>).')


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Iterator[Names]:
    n = Names(request.node.name.replace("[", "-").replace("]", "")[:40])
    yield n
    n.cleanup()


@pytest.fixture(autouse=True)
def fresh_config() -> Iterator[None]:
    """Every test starts from the defaults, on the test broker, with non-durable queues on the
    default exchange."""
    cleats.clear()
    cleats.middleware.clear()
    content.content_types.reset()
    content.content_encodings.reset()
    cleats.configure(amqp=AMQP_URL, exchange="", queue_options={"durable": False},
                     network_recovery_interval=0.5, stop_timeout=10)
    yield
    cleats.clear()
    cleats.middleware.clear()


@contextlib.contextmanager
def running(*classes: type, **options: object) -> Iterator[cleats.WorkerGroup]:
    group = cleats.WorkerGroup(classes, **options)
    group.start()
    try:
        yield group
    finally:
        group.stop()
