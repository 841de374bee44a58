"""Confirmed publishing with cleats from Python. Prints one JSON line.
Usage: python cleats_publish.py HOW QUEUE N
  HOW = THREADS (e.g. 16): that many threads calling cleats.publish, each waiting for its confirm;
  HOW = batchB (e.g. batch100): one thread calling cleats.publish_batch with B messages at a time."""

import json
import os
import sys
import threading
import time

import cleats

how, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cleats.configure(amqp=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"), exchange="")
body = b'{"id":0,"email":"someone@example.com","kind":"welcome","at":"2026-11-21T08:00:00Z","locale":"en"}'
cleats.publish(body, to_queue=queue)  # connect outside the timing

started = time.monotonic()
if how.startswith("batch"):
    batch = int(how[len("batch"):])
    bodies = [body] * batch
    sent = (n - 1) // batch * batch
    for _ in range(sent // batch):
        cleats.publish_batch(bodies, to_queue=queue)
    label = {"batch": batch}
else:
    threads = int(how)
    per = (n - 1) // threads
    sent = per * threads

    def loop():
        for _ in range(per):
            cleats.publish(body, to_queue=queue)

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    label = {"threads": threads}
elapsed = time.monotonic() - started
print(json.dumps(dict(messages=sent, **label, msgs_per_s=round(sent / elapsed))))
