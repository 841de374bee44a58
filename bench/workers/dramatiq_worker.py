"""The Python peer: Dramatiq's RabbitMQ worker (dramatiq.Worker on a RabbitmqBroker, default
middleware, as `dramatiq app` runs in each worker process). Dramatiq consumes its own message
format: bench/run.py enqueues through dramatiq's broker (see dramatiq_prefill there).
Prefetch comes from the env var dramatiq_queue_prefetch (set by the harness).
Usage: python dramatiq_worker.py QUEUE PREFETCH THREADS MODE (MODE: sync)"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dramatiq  # noqa: E402
from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: E402
import harness  # noqa: E402

queue, prefetch, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
broker = RabbitmqBroker(url=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=queue, actor_name="bench_work")
def bench_work(payload):
    harness.hit()


harness.ready_then_go()
worker = dramatiq.Worker(broker, worker_threads=threads)
worker.start()
harness.report_forever()
harness.sleep_forever()
