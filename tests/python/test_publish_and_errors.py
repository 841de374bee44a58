"""Publishing (confirmed), enqueue, and core errors as Python exceptions."""

from __future__ import annotations

import logging
import socket
from typing import Any, List

import pytest

import cleats
from cleats import _engine
from conftest import AMQP_URL, counts, running, wait_for


def test_publish_is_confirmed_and_enqueue_uses_the_workers_settings(names):
    q, out = names.queue(), names.queue("out")
    got: List[Any] = []

    @cleats.from_queue(q, content_type="application/json")
    class Producer(cleats.Worker):
        def work(self, msg):
            got.append(msg)
            self.publish(f"forwarded {msg['n']}", to_queue=out)
            return self.ack()

    @cleats.from_queue(out)
    class Sink(cleats.Worker):
        def work(self, msg):
            got.append(msg)
            return self.ack()

    with running(Producer, Sink):
        Producer.enqueue({"n": 1})
        wait_for(lambda: len(got) == 2, what="both hops")
    assert got == [{"n": 1}, b"forwarded 1"]

    # Confirmed: the message is on the queue when publish returns.
    cleats.publish("stay", to_queue=q, persistent=True)
    assert counts(q) == (1, 0)


def test_publish_batch_delivers_every_message_once_confirmed(names):
    q = names.queue()
    got: List[Any] = []

    @cleats.from_queue(q, content_type="application/json", prefetch=50)
    class Sink(cleats.Worker):
        def work(self, msg):
            got.append(msg)
            return self.ack()

    with running(Sink):
        pass  # declares the queue
    # Confirmed: every message is on the queue when publish_batch returns.
    cleats.publish_batch([{"n": i} for i in range(500)], to_queue=q, content_type="application/json")
    assert counts(q) == (500, 0)
    with running(Sink):
        wait_for(lambda: len(got) == 500, what="the batch")
    assert sorted(m["n"] for m in got) == list(range(500))
    # A Publisher's batch, and an empty batch, which is no error.
    cleats.Publisher().publish_batch([b"a", "b"], to_queue=q)
    cleats.publish_batch([], to_queue=q)
    assert counts(q) == (2, 0)


def test_unroutable_mandatory_batch_raises_after_trying_every_message(names):
    q = names.queue()
    with pytest.raises(cleats.UnroutableError, match="NO_ROUTE"):
        cleats.publish_batch(["x", "y"], to_queue="cleats-pytest-no-such-queue", mandatory=True)
    with pytest.raises(TypeError, match="content_type"):
        cleats.publish_batch([{"a": 1}], to_queue=q)


def test_unroutable_mandatory_message_raises():
    with pytest.raises(cleats.UnroutableError, match="NO_ROUTE"):
        cleats.publish("x", to_queue="cleats-pytest-no-such-queue", mandatory=True)
    assert issubclass(cleats.UnroutableError, cleats.PublishError)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_and_authentication_errors():
    e = _engine.Engine({"amqp": f"amqp://guest:guest@127.0.0.1:{free_port()}"})
    e.add_worker("W", "cleats-pytest-never")
    with pytest.raises(cleats.ConnectionError, match="could not connect") as err:
        e.start()
    assert isinstance(err.value, ConnectionError)  # the builtin too
    bad = AMQP_URL.replace("guest:guest", "guest:wrong")
    e = _engine.Engine({"amqp": bad})
    e.add_worker("W", "cleats-pytest-never")
    with pytest.raises(cleats.AuthenticationError, match="refused the login") as err:
        e.start()
    assert "wrong" not in str(err.value) and "***" in str(err.value)


def test_state_errors():
    e = _engine.Engine({"amqp": AMQP_URL})
    with pytest.raises(cleats.StateError, match="no workers"):
        e.start()


def test_engine_log_lines_reach_python_logging(names, caplog):
    q = names.queue()

    @cleats.from_queue(q)
    class Quiet(cleats.Worker):
        def work(self, msg):
            return self.ack()

    caplog.set_level(logging.INFO, logger="cleats")
    with running(Quiet):
        wait_for(lambda: any("connected to" in r.getMessage() for r in caplog.records),
                 what="the engine's 'connected' line")
    record = next(r for r in caplog.records if "connected to" in r.getMessage())
    assert record.name == "cleats" and getattr(record, "engine_target").startswith("cleats_core")
