"""A cleats worker (the Python package) run in this process by cleats.WorkerGroup, as each
`cleats work` child does. Usage: python cleats_worker.py QUEUE PREFETCH THREADS MODE
MODE: sync (def work, acks), async (async def work, acks), json (sync, json.loads then ack),
latency (sync, records publish-to-work lag), varied (sync, 0-4 ms of sleep: I/O-bound jobs that
finish out of order, as in bench/workers/cleats_worker.rb)."""

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cleats  # noqa: E402
import harness  # noqa: E402

queue, prefetch, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
cleats.configure(amqp=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
                 exchange="", prefetch=prefetch, threads=threads,
                 queue_options={"durable": False})


class SyncWorker(cleats.Worker):
    queue_name = queue

    def work(self, msg):
        harness.hit()
        return self.ack()


class AsyncWorker(cleats.Worker):
    queue_name = queue

    async def work(self, msg):
        harness.hit()
        return self.ack()


class JsonWorker(cleats.Worker):
    queue_name = queue

    def work(self, msg):
        json.loads(msg)
        harness.hit()
        return self.ack()


class LatencyWorker(cleats.Worker):
    queue_name = queue

    def work(self, msg):
        harness.lag(msg)
        harness.hit()
        return self.ack()


class VariedWorker(cleats.Worker):
    queue_name = queue

    def work(self, msg):
        time.sleep(random.random() * 0.004)
        harness.hit()
        return self.ack()


worker = {"sync": SyncWorker, "async": AsyncWorker, "json": JsonWorker, "latency": LatencyWorker,
          "varied": VariedWorker}[mode]
harness.ready_then_go()
cleats.WorkerGroup([worker]).start()
harness.report_forever()
harness.sleep_forever()
