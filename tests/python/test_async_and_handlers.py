"""Async work (concurrency reaches `threads`), Maxretry end to end, custom handlers."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, List

import cleats
from conftest import counts, rabbitmqctl, running, wait_for


def test_async_work_runs_threads_coroutines_at_once(names):
    q = names.queue()
    threads = 4
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "done": 0}
    release = asyncio.Event  # created on the worker's loop below
    gate: List[Any] = []

    class AsyncWorker(cleats.Worker):
        queue_name = q
        options = {"threads": threads, "prefetch": 20}

        async def work(self, msg):
            if not gate:
                gate.append(release())
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            # Every coroutine waits until `threads` of them are in flight at once.
            while state["max"] < threads and not gate[0].is_set():
                await asyncio.sleep(0.01)
            with lock:
                state["now"] -= 1
                state["done"] += 1
            return self.ack()

    with running(AsyncWorker):
        for i in range(threads * 3):
            cleats.publish(str(i), to_queue=q)
        wait_for(lambda: state["done"] == threads * 3, what="every message")
        wait_for(lambda: counts(q) == (0, 0), what="the acks")
    assert state["max"] == threads


def test_async_fast_path_overlaps_threads_tasks_and_reports_errors(names):
    q = names.queue()
    threads, n = 5, 200
    cleats.configure(error_reporters=[lambda e, worker, ctx: reported.append((e, ctx["message"]))])
    reported: List[Any] = []
    state = {"now": 0, "max": 0}
    acked: List[bytes] = []

    class Fast(cleats.Worker):
        queue_name = q
        options = {"threads": threads, "prefetch": 50}

        async def work(self, msg):
            state["now"] += 1  # tasks all run on the loop thread: no lock needed
            state["max"] = max(state["max"], state["now"])
            try:
                await asyncio.sleep(0.005)
                if msg == b"boom":
                    raise ValueError("async boom")
            finally:
                state["now"] -= 1
            acked.append(msg)
            return self.ack()

    with running(Fast) as group:
        # One feeder thread for the pool, no pulling threads blocked on coroutines.
        assert [t.name for t in group._threads] == ["cleats-feed-0"]
        cleats.publish("boom", to_queue=q)
        for i in range(n):
            cleats.publish(str(i), to_queue=q)
        wait_for(lambda: len(acked) == n and reported, what="every message")
        wait_for(lambda: counts(q) == (0, 0), what="the acks and the rejection")
        metrics = group.workers["Fast"]._engine_worker.metrics()
    assert sorted(acked) == sorted(str(i).encode() for i in range(n))
    assert state["max"] == threads  # overlapping, never above the bound
    assert (metrics["ack"], metrics["error"]) == (n, 1)
    (error, msg), = reported
    assert isinstance(error, ValueError) and str(error) == "async boom" and msg == b"boom"


def test_async_fast_path_graceful_stop_loses_nothing(names):
    q = names.queue()
    n = 300
    acked: List[bytes] = []

    class Slow(cleats.Worker):
        queue_name = q
        options = {"threads": 4, "prefetch": 20}

        async def work(self, msg):
            await asyncio.sleep(0.05)
            acked.append(msg)
            return self.ack()

    with running(Slow) as group:
        assert [t.name for t in group._threads] == ["cleats-feed-0"]
        for i in range(n):
            cleats.publish(str(i), to_queue=q)
        wait_for(lambda: len(acked) >= 20, what="some messages")
        drained, _ = group.stop()
        stopped_at = len(acked)
        assert not any(t.is_alive() for t in group._threads)
    assert drained and 20 <= stopped_at < n and len(acked) == stopped_at
    assert len(set(acked)) == len(acked)
    # What was taken finished and was acked; everything else is back, ready.
    wait_for(lambda: counts(q) == (n - len(acked), 0), what="the rest back on the queue")


def test_async_work_with_middleware_keeps_the_thread_path(names):
    q = names.queue()
    seen: List[Any] = []

    class Record(cleats.Middleware):
        def __call__(self, msg, delivery_info, metadata, handler):
            result = self.app(msg, delivery_info, metadata, handler)
            seen.append(result)  # the coroutine's result, not the coroutine
            return result

    cleats.middleware.use(Record)

    class WithMiddleware(cleats.Worker):
        queue_name = q
        options = {"threads": 2}

        async def work(self, msg):
            await asyncio.sleep(0)
            return self.ack()

    with running(WithMiddleware) as group:
        assert [t.name for t in group._threads] == ["cleats-work-0-0", "cleats-work-0-1"]
        cleats.publish("x", to_queue=q)
        wait_for(lambda: counts(q) == (0, 0) and seen, what="the ack")
    assert seen == ["ack"]


def test_maxretry_retries_then_parks_in_the_error_queue(names):
    q = names.queue()
    names.maxretry(q)
    attempts: List[int] = []

    @cleats.from_queue(q, handler=cleats.Maxretry, retry_timeout=100, retry_max_times=2)
    class Flaky(cleats.Worker):
        def work_with_params(self, msg, delivery_info, metadata):
            deaths = (metadata.headers or {}).get("x-death") or []
            attempts.append(sum(d["count"] for d in deaths if d["queue"] == q))
            raise RuntimeError("still broken")

    with running(Flaky):
        cleats.publish("job", to_queue=q)
        wait_for(lambda: counts(f"{q}-error")[0] == 1, timeout=20, what="the error queue")
    assert attempts == [0, 1, 2]
    assert counts(q) == (0, 0) and counts(f"{q}-retry") == (0, 0)

    # The parked copy carries retry_info with the exception.
    infos: List[Any] = []

    @cleats.from_queue(f"{q}-error")
    class ErrorReader(cleats.Worker):
        def work_with_params(self, msg, delivery_info, metadata):
            infos.append((msg, json.loads(metadata.headers["retry_info"])))
            return self.ack()

    with running(ErrorReader):
        wait_for(lambda: infos, what="the parked message")
    msg, info = infos[0]
    assert msg == b"job"
    assert info["num_attempts"] == 3
    assert info["error_class"] == "RuntimeError" and info["error_message"] == "still broken"
    assert info["backtrace"][0].endswith("in `work_with_params'")


def test_custom_handler_settles_through_its_channel(names):
    q, side = names.queue(), names.queue("side")
    calls: List[str] = []

    class CountingHandler(cleats.Handler):
        @classmethod
        def configure_queue(cls, name, options):
            args = dict(options["queue_options"].get("arguments") or {}, **{"x-max-priority": 5})
            return {**options["queue_options"], "arguments": args}

        def __init__(self, channel, queue, options):
            super().__init__(channel, queue, options)
            channel.queue(side, durable=False)

        def acknowledge(self, delivery_info, metadata, msg):
            calls.append(f"ack {msg!r}")
            self.channel.acknowledge(delivery_info.delivery_tag)

        def error(self, delivery_info, metadata, msg, error):
            calls.append(f"error {error}")
            # Requeue once, then give up.
            self.channel.nack(delivery_info.delivery_tag, False, not delivery_info.redelivered)

    @cleats.from_queue(q, handler=CountingHandler)
    class Custom(cleats.Worker):
        def work(self, msg):
            if msg == b"bad":
                raise ValueError("nope")
            return self.ack()

    with running(Custom) as group:
        assert group.workers["Custom"]._engine_worker.handler == "custom"
        cleats.publish("good", to_queue=q)
        cleats.publish("bad", to_queue=q)
        wait_for(lambda: len(calls) == 3, what="three handler calls")
        wait_for(lambda: counts(q) == (0, 0), what="everything settled")
        assert counts(side) == (0, 0)  # declared by the handler
        assert "x-max-priority" in rabbitmqctl("list_queues", "name", "arguments").split(q)[1].split("\n")[0]
    assert sorted(calls) == ["ack b'good'", "error nope", "error nope"]  # two threads: any order
