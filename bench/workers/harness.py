"""Shared by the Python bench workers: the READY/GO handshake with bench/run.py and progress
lines. Protocol (stdout): "READY" once imported; the harness writes "GO" on stdin, then the worker
connects and consumes; every 20 ms it prints "N <messages done> <wall time of the last one>".
Counting is per thread (no lock on the hot path); the reporter sums the slots."""

import json
import os
import sys
import threading
import time

_slots = []
_lock = threading.Lock()
_local = threading.local()
_lags = []


def hit():
    slot = getattr(_local, "slot", None)
    if slot is None:
        slot = _local.slot = [0, 0.0]
        with _lock:
            _slots.append(slot)
    slot[0] += 1
    slot[1] = time.time()


def lag(body):
    """Latency mode: records now - body["ts"]; writes BENCH_LAT_OUT at BENCH_LAT_TARGET."""
    _lags.append(time.time() - json.loads(body)["ts"])
    if len(_lags) == int(os.environ["BENCH_LAT_TARGET"]):
        out = os.environ["BENCH_LAT_OUT"]
        with open(out + ".tmp", "w") as f:
            f.write("\n".join(map(repr, _lags)))
        os.rename(out + ".tmp", out)


def ready_then_go():
    print("READY", flush=True)
    sys.stdin.readline()


def _report():
    while True:
        n, last = 0, 0.0
        for s in list(_slots):
            n += s[0]
            last = max(last, s[1])
        print(f"N {n} {last}", flush=True)
        time.sleep(0.02)


def report_forever():
    threading.Thread(target=_report, name="bench-report", daemon=True).start()


def sleep_forever():
    threading.Event().wait()
