"""What `work` returns, seen on the broker: ack, reject, requeue, noop, exceptions; plus
work_with_params, JSON, middleware order, metrics names and error reporters."""

from __future__ import annotations

import threading
from typing import Any, List

import cleats
from conftest import counts, running, wait_for


def dead_letter_args(dlq: str) -> dict:
    return {"queue_options": {"durable": False, "arguments": {
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}}}


def make_worker(queue: str, behaviour, name: str = "W", **options: Any) -> type:
    seen: List[Any] = []

    class W(cleats.Worker):
        queue_name = queue
        calls = seen

        def work(self, msg):
            seen.append(msg)
            return behaviour(self, msg)

    W.options = options
    W.__name__ = W.__qualname__ = name
    return W


def test_ack_removes_the_message(names):
    q = names.queue()
    W = make_worker(q, lambda self, m: self.ack())
    with running(W) as group:
        for i in range(3):
            cleats.publish(f"m{i}", to_queue=q)
        wait_for(lambda: len(W.calls) == 3, what="3 messages")
        wait_for(lambda: counts(q) == (0, 0), what="acks on the broker")
        metrics = group.workers["W"]._engine_worker.metrics()
    assert sorted(W.calls) == [b"m0", b"m1", b"m2"]
    assert metrics["ack"] == 3


def test_reject_and_error_dead_letter_without_requeue(names):
    q, dlq = names.queue(), names.queue("dlq")
    cleats.configure(**dead_letter_args(dlq))
    reported: List[Any] = []
    cleats.configure(error_reporters=[lambda e, worker, ctx: reported.append((e, ctx))])

    def behaviour(self, msg):
        if msg == b"boom":
            raise KeyError("no such thing")
        return self.reject()

    W = make_worker(q, behaviour)
    # The dead-letter queue must exist before messages are dead-lettered to it.
    D = make_worker(dlq, lambda self, m: None, "D", queue_options={"durable": False, "arguments": {}})
    with running(D):
        pass
    with running(W) as group:
        cleats.publish("no", to_queue=q)
        cleats.publish("boom", to_queue=q)
        wait_for(lambda: counts(dlq)[0] == 2, what="two dead-lettered messages")
        assert counts(q) == (0, 0)
        metrics = group.workers["W"]._engine_worker.metrics()
    assert sorted(W.calls) == [b"boom", b"no"]
    assert (metrics["reject"], metrics["error"]) == (1, 1)
    (error, ctx), = reported
    assert isinstance(error, KeyError)
    assert ctx["class"] == "W" and ctx["message"] == b"boom"
    assert ctx["delivery_info"].routing_key == q


def test_requeue_redelivers(names):
    q = names.queue()
    redelivered: List[bool] = []

    class W(cleats.Worker):
        queue_name = q

        def work_with_params(self, msg, delivery_info, metadata):
            redelivered.append(delivery_info.redelivered)
            return self.ack() if delivery_info.redelivered else self.requeue()

    with running(W):
        cleats.publish("again", to_queue=q)
        wait_for(lambda: len(redelivered) == 2, what="a redelivery")
        wait_for(lambda: counts(q) == (0, 0), what="the final ack")
    assert redelivered == [False, True]


def test_noop_leaves_the_message_unacknowledged_until_stop(names):
    q = names.queue()
    W = make_worker(q, lambda self, m: "something else")
    with running(W) as group:
        cleats.publish("keep", to_queue=q)
        wait_for(lambda: len(W.calls) == 1, what="the delivery")
        wait_for(lambda: counts(q) == (0, 1), what="one unacknowledged message")
        assert group.workers["W"]._engine_worker.metrics()["noop"] == 1
    # Closing the channel gave it back.
    wait_for(lambda: counts(q) == (1, 0), what="the message back on the queue")


def test_work_with_params_gets_info_and_metadata(names):
    q = names.queue()
    seen: List[Any] = []

    class W(cleats.Worker):
        queue_name = q

        def work_with_params(self, msg, delivery_info, metadata):
            seen.append((msg, delivery_info, metadata))
            return self.ack()

    with running(W):
        cleats.publish("p", to_queue=q, headers={"trace": "t1", "n": {"x": [1, 2]}},
                       correlation_id="c-1", priority=3, type="kind")
        wait_for(lambda: seen, what="the delivery")
    msg, info, meta = seen[0]
    assert msg == b"p"
    assert info.routing_key == q and info["exchange"] == "" and info.delivery_tag >= 1
    assert meta.headers == {"trace": "t1", "n": {"x": [1, 2]}}
    assert (meta.correlation_id, meta["priority"], meta.type) == ("c-1", 3, "kind")


def test_json_content_type(names):
    q1, q2 = names.queue("by-message"), names.queue("by-worker")
    got: List[Any] = []
    W1 = make_worker(q1, lambda self, m: got.append(("message", m)) or self.ack(), "W1")
    W2 = make_worker(q2, lambda self, m: got.append(("worker", m)) or self.ack(), "W2",
                     content_type="application/json")
    with running(W1, W2):
        cleats.publish({"a": [1, 2]}, to_queue=q1, content_type="application/json")
        cleats.publish('{"b": true}', to_queue=q2)  # no content type: the worker's wins
        wait_for(lambda: len(got) == 2, what="both messages")
    assert sorted(got, key=str) == [("message", {"a": [1, 2]}), ("worker", {"b": True})]


def test_middleware_runs_in_registration_order(names):
    q = names.queue()
    order: List[str] = []

    class Tag(cleats.Middleware):
        def __init__(self, app, label):
            super().__init__(app)
            self.label = label

        def __call__(self, msg, delivery_info, metadata, handler):
            order.append(f"{self.label}>")
            result = self.app(msg, delivery_info, metadata, handler)
            order.append(f"<{self.label}")
            return result

    cleats.middleware.use(Tag, "outer")
    cleats.middleware.use(Tag, "inner")
    W = make_worker(q, lambda self, m: order.append("work") or self.ack())
    with running(W):
        cleats.publish("x", to_queue=q)
        wait_for(lambda: len(order) == 5, what="the chain")
        wait_for(lambda: counts(q) == (0, 0), what="the ack")
    assert order == ["outer>", "inner>", "work", "<inner", "<outer"]


def test_metrics_use_the_engine_names_from_the_work_thread(names):
    q = names.queue()
    metrics = cleats.MemoryMetrics()
    cleats.configure(metrics=metrics)
    threads: List[str] = []

    class MetricsWorker(cleats.Worker):
        queue_name = q

        def work(self, msg):
            threads.append(threading.current_thread().name)
            return self.ack() if msg == b"a" else self.reject()

    with running(MetricsWorker):
        cleats.publish("a", to_queue=q)
        cleats.publish("b", to_queue=q)
        wait_for(lambda: metrics.counts["work.MetricsWorker.ended"] == 2, what="metrics")
    assert metrics.counts["work.MetricsWorker.started"] == 2
    assert metrics.counts["work.MetricsWorker.handled.ack"] == 1
    assert metrics.counts["work.MetricsWorker.handled.reject"] == 1
    assert len(metrics.timings["work.MetricsWorker.time"]) == 2
    assert all(t.startswith("cleats-work-") for t in threads)


def test_heartbeats_continue_while_work_holds_the_gil(names, caplog):
    """The engine's heartbeats run on its own threads: a `work` that keeps the GIL busy for
    several heartbeat intervals does not lose the connection."""
    import logging
    import time

    caplog.set_level(logging.INFO, logger="cleats")
    cleats.configure(heartbeat=1)
    q = names.queue()

    class Busy(cleats.Worker):
        queue_name = q

        def work(self, msg):
            end = time.monotonic() + 4
            n = 0
            while time.monotonic() < end:  # pure Python: holds the GIL
                n += 1
            return self.ack()

    with running(Busy) as group:
        cleats.publish("long", to_queue=q)
        wait_for(lambda: group.workers["Busy"]._engine_worker.metrics()["ack"] == 1, timeout=30,
                 what="the long work to finish")
        wait_for(lambda: counts(q) == (0, 0), what="the ack on the broker")
        assert group.engine.status == "connected"
    assert not [r for r in caplog.records if "lost the connection" in r.getMessage()]


def test_shared_threads_serve_every_worker(names):
    q1, q2 = names.queue("one"), names.queue("two")
    got: List[Any] = []
    W1 = make_worker(q1, lambda self, m: got.append(("W1", m)) or self.ack(), "W1")
    W2 = make_worker(q2, lambda self, m: got.append(("W2", m)) or self.ack(), "W2")
    cleats.configure(share_threads=True, threads=3)
    with running(W1, W2) as group:
        assert len(group.engine.pools()) == 1 and len(group._threads) == 3
        cleats.publish("a", to_queue=q1)
        cleats.publish("b", to_queue=q2)
        wait_for(lambda: len(got) == 2, what="both messages")
    assert sorted(got) == [("W1", b"a"), ("W2", b"b")]


def test_auto_ack_settles_nothing(names):
    q = names.queue()
    W = make_worker(q, lambda self, m: self.reject(), ack=False)
    with running(W) as group:
        cleats.publish("x", to_queue=q)
        wait_for(lambda: len(W.calls) == 1, what="the delivery")
        wait_for(lambda: counts(q) == (0, 0), what="the broker forgetting it")
        metrics = group.workers["W"]._engine_worker.metrics()
    assert (metrics["ended"], metrics["reject"]) == (1, 0)
