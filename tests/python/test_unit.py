"""What works without a broker: workers as plain objects, configuration, registries."""

from __future__ import annotations

import asyncio
import warnings

import pytest

import cleats
from cleats import _engine


@cleats.from_queue("unit-emails", threads=3)
class EmailWorker(cleats.Worker):
    def work(self, msg):
        return self.ack() if msg == "ok" else self.reject()


class AsyncWorker(cleats.Worker):
    queue_name = "unit-async"

    async def work(self, msg):
        await asyncio.sleep(0)
        return self.requeue()


def test_worker_runs_without_a_broker():
    assert EmailWorker().work("ok") == "ack"
    assert EmailWorker().work("bad") == "reject"
    assert asyncio.run(AsyncWorker().work("x")) == "requeue"
    w = EmailWorker()
    assert w.queue == "unit-emails" and w.opts["threads"] == 3
    assert w.id.startswith("worker-unit-emails:1:")
    assert EmailWorker in cleats.worker_classes()


def test_defaults_come_from_the_engine():
    d = cleats.defaults()
    assert d == _engine.defaults()
    assert (d["prefetch"], d["threads"], d["workers"], d["exchange"]) == (10, 10, 4, "sneakers")
    cleats.clear()
    assert cleats.config()["heartbeat"] == 30


def test_configure_merges_deeply_and_warns_about_unknown_keys():
    cleats.configure(queue_options={"arguments": {"x-max-priority": 5}})
    assert cleats.config()["queue_options"]["durable"] is False  # from the fixture
    assert cleats.config()["queue_options"]["arguments"] == {"x-max-priority": 5}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cleats.configure(worker_prefetch=3)
    assert any("did you mean `prefetch`" in str(w.message) for w in caught)


def test_bad_options_raise_config_error_naming_the_option():
    with pytest.raises(cleats.ConfigError, match="`prefetch`") as e:
        cleats.configure(prefetch=0)
    assert isinstance(e.value, ValueError) and isinstance(e.value, cleats.CleatsError)
    with pytest.raises(cleats.ConfigError, match="`amqp`"):
        _engine.Engine({"amqp": "redis://localhost"})


def test_redacted_hides_the_password():
    assert cleats.redacted({"amqp": "amqp://u:secret@h"})["amqp"] == "amqp://u:***@h"


def test_content_type_registry():
    cleats.content_types.register("text/upper", serializer=str.upper, deserializer=bytes.decode)
    assert cleats.content_types.serialize("text/upper", "a") == "A"
    assert cleats.content_types.deserialize("unknown/type", b"x") == b"x"
    with pytest.raises(ValueError):
        cleats.content_types.register("bad", serializer=1, deserializer=str)
    assert cleats.content_types.deserialize("application/json", b'{"a": 1}') == {"a": 1}


def test_publish_refuses_objects_without_a_content_type():
    with pytest.raises(TypeError, match="content_type"):
        cleats.publish({"a": 1}, to_queue="nowhere")


def test_a_ready_made_connection_is_refused_with_a_hint():
    with pytest.raises(cleats.ConfigError, match="`amqp`"):
        cleats.configure(connection=object())


class _EngineWorker:
    """Stands in for `_engine.Worker` in `Worker._attach`."""

    queue = "unit-paths"
    ack = True

    def metric_names(self):
        names = {k: f"work.PathWorker.{k}" for k in ("started", "time", "ended")}
        for o in ("ack", "reject", "requeue", "error", "noop"):
            names[f"handled.{o}"] = f"work.PathWorker.handled.{o}"
        return names


class _Delivery:
    """Stands in for `_engine.Delivery`: records how it was settled."""

    delivery_info = {"delivery_tag": 1, "routing_key": "unit-paths", "exchange": "",
                     "redelivered": False, "consumer_tag": "c"}
    properties = {"headers": None}
    worker_name = "PathWorker"

    def __init__(self, body, content_type=None):
        self.body = body
        self.content_type = content_type
        self.content_encoding = None
        self.settled = []

    def settle(self, outcome, error=None):
        self.settled.append((outcome, error and error[:2]))
        return 0.001


def test_the_short_path_settles_as_the_full_one():
    """Without metrics a plain `work(msg)` takes `_process_plain`; with metrics, the full path.
    Both must decode and settle every kind of result the same way."""
    results = {
        "ack": lambda w: w.ack(),
        "reject": lambda w: w.reject(),
        "requeue": lambda w: w.requeue(),
        "none": lambda w: None,
        "other": lambda w: "done",
        "raise": lambda w: 1 / 0,
    }

    class PathWorker(cleats.Worker):
        queue_name = "unit-paths"
        seen = []

        def work(self, msg):
            type(self).seen.append(msg)
            return results[msg["r"] if isinstance(msg, dict) else msg.decode()](self)

    plain, counted = PathWorker(), PathWorker()
    counted.metrics = cleats.MemoryMetrics()
    for w in (plain, counted):
        w._attach(_EngineWorker(), None)
    assert not plain._needs_params and not counted._needs_params  # both may take the short path
    for name in results:
        for body, ctype in ((name.encode(), None), (b'{"r": "%s"}' % name.encode(), "application/json")):
            settled = []
            for w in (plain, counted):
                d = _Delivery(body, ctype)
                w._process(d)
                settled.append(d.settled)
            assert settled[0] == settled[1] and len(settled[0]) == 1, (name, ctype, settled)
    assert PathWorker.seen[:2] == [b"ack", b"ack"]  # no content type: the body as it came
    assert PathWorker.seen[2:4] == [{"r": "ack"}, {"r": "ack"}]
    assert counted.metrics.counts["work.PathWorker.handled.error"] == 2
    assert counted.metrics.counts["work.PathWorker.started"] == 2 * len(results)
