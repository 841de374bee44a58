"""Confirmed publishing with cleats from Python: cleats.publish (each call waits for the broker's
confirm) from THREADS threads. Prints one JSON line. Usage: python cleats_publish.py THREADS QUEUE N"""

import json
import os
import sys
import threading
import time

import cleats

threads, queue, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
cleats.configure(amqp=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"), exchange="")
body = b'{"id":0,"email":"someone@example.com","kind":"welcome","at":"2026-11-21T08:00:00Z","locale":"en"}'
cleats.publish(body, to_queue=queue)  # connect outside the timing
per = (n - 1) // threads


def loop():
    for _ in range(per):
        cleats.publish(body, to_queue=queue)


started = time.monotonic()
ts = [threading.Thread(target=loop) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
elapsed = time.monotonic() - started
print(json.dumps(dict(messages=per * threads, threads=threads, msgs_per_s=round(per * threads / elapsed))))
