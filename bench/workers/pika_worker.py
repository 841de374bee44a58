"""The Python peer: pika's BlockingConnection with basic.qos(prefetch) and a manual-ack consumer
that hands each delivery to a ThreadPoolExecutor(THREADS); the pool thread works, then acks via
connection.add_callback_threadsafe (pika is not thread-safe).
Usage: python pika_worker.py QUEUE PREFETCH THREADS MODE (MODE: sync, json)"""

import functools
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pika  # noqa: E402
import harness  # noqa: E402

queue, prefetch, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
harness.ready_then_go()
conn = pika.BlockingConnection(pika.URLParameters(
    os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")))
channel = conn.channel()
channel.basic_qos(prefetch_count=prefetch)
pool = ThreadPoolExecutor(max_workers=threads)
parse = mode == "json"


def work(tag, body):
    if parse:
        json.loads(body)
    harness.hit()
    conn.add_callback_threadsafe(functools.partial(channel.basic_ack, tag))


def on_message(ch, method, properties, body):
    pool.submit(work, method.delivery_tag, body)


channel.basic_consume(queue, on_message, auto_ack=False)
harness.report_forever()
channel.start_consuming()
