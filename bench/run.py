"""The cleats benchmarks (issue 5), run by scripts/bench.sh: drain rate, CPU per message and peak
RSS of each contender side by side, publish-to-work latency, confirmed publishing and a soak.
Prints tables and writes bench/results/<timestamp>.json. Never part of the test suite.

  python bench/run.py [--scale quick|full] [--reps N] [--only drain,latency,publish,soak]
                      [--contenders name,...]      (or BENCH_SCALE=quick|full)

Workers are separate processes (bench/workers/*) speaking a small stdout protocol (READY, then
"N <done> <time of last>" every 20 ms after the harness writes GO). The harness prefills each
queue with pika, samples the workers' /proc/<pid>/stat (utime+stime) at GO and when the last
message is done, and VmHWM at the end, so the CPU excludes interpreter start-up and imports but
includes connecting, declaring and consuming. Rate = N / (time of the last message - GO).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import pika

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
WORKERS = os.path.join(BENCH, "workers")
RESULTS = os.path.join(BENCH, "results")
AMQP = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PY = sys.executable
RUBY = os.environ.get("RUBY", "ruby")
CEILING = os.path.join(ROOT, "target", "release", "examples", "ceiling")
TICK = os.sysconf("SC_CLK_TCK")
TAG = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"

# A realistic ~100-byte JSON body.
BODY = ('{"id":%d,"email":"someone@example.com","kind":"welcome",'
       '"at":"2026-11-21T08:00:00Z","ref":"%08d"}')

SCALES = {
    "smoke": dict(drain=5_000, latency_s=2, publish=2_000, soak=20_000),  # checks the harness
    # messages per drain run, latency seconds at 2,000 msg/s, publish count, soak count
    "quick": dict(drain=60_000, latency_s=5, publish=20_000, soak=200_000),
    "full": dict(drain=330_000, latency_s=20, publish=100_000, soak=1_000_000),
}

# name -> (command builder, mode, kind). kind: ceiling | amqp (plain queue) | dramatiq
CONTENDERS = {
    "ceiling": (None, None, "ceiling"),
    # References: the idiomatic raw lapin loop (await each ack); the broker's own ceiling for an
    # acknowledging consumer at the same prefetch (bench/wire.rs: one socket, one multiple ack
    # per read, no library); and the broker pushing with no acks at all (consumer no_ack), the
    # most it delivers from one queue here.
    "raw-lapin": (None, None, "lapin"),
    "broker-acks": (None, None, "wire"),
    "broker-noack": (None, None, "noack"),
    "cleats-ruby": ([RUBY, os.path.join(WORKERS, "cleats_worker.rb")], "ack", "amqp"),
    "cleats-ruby-json": ([RUBY, os.path.join(WORKERS, "cleats_worker.rb")], "json", "amqp"),
    "bunny+pool": ([RUBY, os.path.join(WORKERS, "bunny_worker.rb")], "ack", "amqp"),
    "cleats-py-sync": ([PY, os.path.join(WORKERS, "cleats_worker.py")], "sync", "amqp"),
    "cleats-py-async": ([PY, os.path.join(WORKERS, "cleats_worker.py")], "async", "amqp"),
    "pika+threadpool": ([PY, os.path.join(WORKERS, "pika_worker.py")], "sync", "amqp"),
    "dramatiq": ([PY, os.path.join(WORKERS, "dramatiq_worker.py")], "sync", "dramatiq"),
}
# Contenders that are bench/ceiling.rs runs (no host language; not run with 2 processes).
RUST_KINDS = ("ceiling", "lapin", "wire", "noack")
# (label, prefetch, threads, processes)
CONFIGS = [("defaults", 10, 10, 1), ("tuned", 500, 10, 1), ("2 procs", 10, 10, 2)]
PEERS = {"cleats-ruby": "bunny+pool", "cleats-ruby-json": "bunny+pool",
         "cleats-py-sync": "pika+threadpool", "cleats-py-async": "pika+threadpool"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- broker helpers (pika)

def channel():
    conn = pika.BlockingConnection(pika.URLParameters(AMQP))
    return conn, conn.channel()


def publish_plain(queue: str, n: int, prefill: bool = True) -> None:
    """Publishes n bodies to `queue` (no confirms). As a prefill it declares the queue first and
    waits until the broker counts them; the soak's feed has a consumer draining as it goes."""
    conn, ch = channel()
    if prefill:
        ch.queue_declare(queue, durable=False)
    for i in range(n):
        ch.basic_publish("", queue, BODY % (i, i))
    if prefill:
        wait_count(ch, queue, n)
    conn.close()


def wait_count(ch, queue: str, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while ch.queue_declare(queue, passive=True).method.message_count < n:
        if time.time() > deadline:
            raise RuntimeError(f"prefill of {queue} did not reach {n}")
        time.sleep(0.05)


def delete_queues(*queues: str) -> None:
    conn, ch = channel()
    for q in queues:
        ch.queue_delete(q)
    conn.close()


def dramatiq_prefill(queue: str, n: int) -> None:
    """Enqueues one message with dramatiq's own RabbitmqBroker (which declares the queue and its
    .DQ/.XQ companions the way dramatiq does), then publishes n-1 copies of that encoded message
    with pika, with the properties dramatiq's enqueue uses (persistent). Dramatiq does not dedupe
    message ids, so each copy is one actor call."""
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=AMQP)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue, actor_name="bench_work", broker=broker)
    def bench_work(payload):  # never runs here
        pass

    payload = json.loads(BODY % (0, 0))
    message = bench_work.send(payload)
    encoded = message.encode()
    conn, ch = channel()
    props = pika.BasicProperties(delivery_mode=2, priority=0)
    for _ in range(n - 1):
        ch.basic_publish("", queue, encoded, props)
    wait_count(ch, queue, n)
    conn.close()
    broker.close()


# ---------------------------------------------------------------- /proc

def proc_cpu(pid: int) -> float:
    """user+sys CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_status(pid: int, key: str) -> int:
    """A kB field of /proc/<pid>/status (VmHWM, VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def broker_pid() -> int | None:
    """The local RabbitMQ, to report the broker's CPU per message beside the worker's: the beam.smp
    started with `-s rabbit boot`, not one of rabbitmqctl's, which run in a beam.smp too."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if os.path.basename(argv[0]) == b"beam.smp" and any(
                    argv[i:i + 3] == [b"-s", b"rabbit", b"boot"] for i in range(len(argv))):
                return int(pid)
    return None


BROKER = broker_pid()


def broker_cpu() -> float:
    try:
        return proc_cpu(BROKER) if BROKER else 0.0
    except OSError:
        return 0.0


def thread_cpu(pid: int) -> dict:
    """CPU seconds per thread name (comm), summed over threads of the same name: where time goes."""
    out: dict = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw.rsplit(")", 1)[1].split()
        # Group numbered threads (cleats-work-3, tokio-runtime-w) by their prefix.
        key = name.rstrip("0123456789-")
        out[key] = round(out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / TICK, 2)
    return out


# ---------------------------------------------------------------- worker processes

class Worker:
    """One worker process speaking the READY / GO / "N done last" protocol."""

    def __init__(self, argv: list, env: dict, logfile: str):
        self.err = open(logfile, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, env=env, text=True, bufsize=1)
        self.done, self.last = 0, 0.0
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("READY"):
                self.ready.set()
            elif line.startswith("N "):
                _, n, last = line.split()
                self.done, self.last = int(n), float(last)

    def go(self) -> None:
        self.proc.stdin.write("GO\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.err.close()


def start_workers(name: str, queue: str, prefetch: int, threads: int, procs: int,
                  env_extra: dict | None = None) -> list:
    argv, mode, kind = CONTENDERS[name]
    env = dict(os.environ, AMQP_URL=AMQP, **(env_extra or {}))
    if kind == "dramatiq":
        env["dramatiq_queue_prefetch"] = str(prefetch)
    logfile = os.path.join(RESULTS, f"worker-{name}.log")
    workers = [Worker(argv + [queue, str(prefetch), str(threads), mode], env, logfile)
               for _ in range(procs)]
    deadline = time.time() + 60
    while not all(w.ready.is_set() for w in workers):
        if time.time() > deadline or not all(w.alive() for w in workers):
            for x in workers:
                x.kill()
            raise RuntimeError(f"{name}: worker not ready (see {logfile})")
        time.sleep(0.02)
    return workers


def drain_once(name: str, n: int, prefetch: int, threads: int, procs: int) -> dict:
    kind = CONTENDERS[name][2]
    if kind in RUST_KINDS:
        argv = {"ceiling": [CEILING, str(n), str(prefetch), str(threads)],
                "lapin": [CEILING, "lapin", str(n), str(prefetch)],
                "wire": [CEILING, "wire", str(n), str(prefetch), "multiple"],
                "noack": [CEILING, "lapin", str(n), str(prefetch), "noack"]}[kind]
        out = subprocess.run(argv, env=dict(os.environ, AMQP_URL=AMQP), capture_output=True,
                             text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        return dict(msgs_per_s=r["msgs_per_s"], cpu_us_per_msg=r["cpu_us_per_msg"],
                    peak_rss_mib=r["peak_rss_mib"], threads_cpu_s={},
                    broker_cpu_us_per_msg=r["broker_cpu_us_per_msg"])
    queue = f"cleats-bench-{name}-{TAG}-{uuid.uuid4().hex[:6]}"
    dramatiq = CONTENDERS[name][2] == "dramatiq"
    (dramatiq_prefill if dramatiq else publish_plain)(queue, n)
    workers = []
    try:
        workers = start_workers(name, queue, prefetch, threads, procs)
        cpu0 = [proc_cpu(w.proc.pid) for w in workers]
        b0, load0 = broker_cpu(), os.getloadavg()[0]
        t_go = time.time()
        for w in workers:
            w.go()
        deadline = t_go + max(120.0, n / 500)
        while sum(w.done for w in workers) < n:
            if time.time() > deadline or not all(w.alive() for w in workers):
                raise RuntimeError(f"{name}: {sum(w.done for w in workers)} of {n} done")
            time.sleep(0.01)
        cpu1 = [proc_cpu(w.proc.pid) for w in workers]
        b1 = broker_cpu()
        hwm = [proc_status(w.proc.pid, "VmHWM") for w in workers]
        split = thread_cpu(workers[0].proc.pid)
        elapsed = max(w.last for w in workers) - t_go
        return dict(msgs_per_s=round(n / elapsed), elapsed_s=round(elapsed, 2),
                    cpu_us_per_msg=round((sum(cpu1) - sum(cpu0)) * 1e6 / n, 1),
                    peak_rss_mib=round(max(hwm) / 1024, 1), threads_cpu_s=split,
                    broker_cpu_us_per_msg=round((b1 - b0) * 1e6 / n, 1),
                    loadavg_1m=(load0, os.getloadavg()[0]))
    finally:
        for w in workers:
            w.kill()
        queues = [queue] + ([f"{queue}.DQ", f"{queue}.XQ"] if dramatiq else [])
        delete_queues(*queues)


def summarize(values: list) -> dict:
    return dict(median=statistics.median(values), min=min(values), max=max(values))


# Dramatiq drains 4-8k msg/s here: it gets a third of N, which still makes its runs the longest.
N_DIVISOR = {"dramatiq": 3}


def bench_drain(scale: dict, reps: int, names: list, save=lambda raw: None) -> dict:
    results: dict = {}
    for label, prefetch, threads, procs in CONFIGS:
        for rep in range(reps):
            # Contenders interleaved within a repetition: side by side on a noisy machine.
            for name in names:
                if CONTENDERS[name][2] in RUST_KINDS and procs > 1:
                    continue
                log(f"drain [{label}] rep {rep + 1}/{reps}: {name}")
                try:
                    n = scale["drain"] // N_DIVISOR.get(name, 1)
                    r = dict(drain_once(name, n, prefetch, threads, procs), messages=n)
                except Exception as e:  # a failing contender is reported, the others still run
                    log(f"  failed: {e}")
                    r = dict(error=str(e))
                log(f"  {r}")
                results.setdefault(label, {}).setdefault(name, []).append(r)
                save(results)
    return results


def drain_table(results: dict, messages: int) -> list:
    rows = []
    for label, prefetch, threads, procs in CONFIGS:
        runs = results.get(label, {})
        med = {}
        for name, rs in runs.items():
            ok = [r for r in rs if "error" not in r]
            if ok:
                med[name] = {k: summarize([r[k] for r in ok])
                             for k in ("msgs_per_s", "cpu_us_per_msg", "peak_rss_mib",
                                       "broker_cpu_us_per_msg") if all(k in r for r in ok)}
        for name, m in med.items():
            rate = m["msgs_per_s"]["median"]
            peer = PEERS.get(name)
            rows.append(dict(
                config=f"{label} (prefetch {prefetch}, threads {threads}, {procs} proc)",
                contender=name, runs=len(med and [r for r in runs[name] if "error" not in r]),
                msgs_per_s=m["msgs_per_s"], cpu_us_per_msg=m["cpu_us_per_msg"],
                peak_rss_mib=m["peak_rss_mib"], broker_cpu_us_per_msg=m.get("broker_cpu_us_per_msg"),
                vs_peer=round(rate / med[peer]["msgs_per_s"]["median"], 2) if peer in med else None,
                vs_ceiling=round(rate / med["ceiling"]["msgs_per_s"]["median"], 2)
                if "ceiling" in med and name != "ceiling" else None,
                vs_broker=round(rate / med["broker-acks"]["msgs_per_s"]["median"], 2)
                if "broker-acks" in med and name != "broker-acks" else None,
                messages=messages // N_DIVISOR.get(name, 1)))
    return rows


def fmt_spread(s: dict, digits: int = 0) -> str:
    f = f"{{:.{digits}f}}"
    return f"{f.format(s['median'])} ({f.format(s['min'])}-{f.format(s['max'])})"


def print_drain(rows: list) -> None:
    print("\n## Drain (median of runs, (min-max))\n")
    print("| config | contender | N | msg/s | CPU us/msg | peak RSS MiB | x peer | x ceiling "
          "| x broker-acks | broker CPU us/msg |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['contender']} | {r['messages']} | {fmt_spread(r['msgs_per_s'])} | "
              f"{fmt_spread(r['cpu_us_per_msg'], 1)} | {fmt_spread(r['peak_rss_mib'], 1)} | "
              f"{r['vs_peer'] if r['vs_peer'] is not None else '-'} | "
              f"{r['vs_ceiling'] if r['vs_ceiling'] is not None else '-'} | "
              f"{r['vs_broker'] if r.get('vs_broker') is not None else '-'} | "
              f"{fmt_spread(r['broker_cpu_us_per_msg'], 1) if r.get('broker_cpu_us_per_msg') else '-'} |")


# ---------------------------------------------------------------- latency

def latency_once(name: str, seconds: int, rate: int = 2000) -> dict:
    queue = f"cleats-bench-lat-{name}-{TAG}-{uuid.uuid4().hex[:6]}"
    n = seconds * rate
    out = os.path.join(RESULTS, f"lat-{queue}.txt")
    conn, ch = channel()
    ch.queue_declare(queue, durable=False)
    argv, _, _ = CONTENDERS[name]
    saved = CONTENDERS[name]
    CONTENDERS[name] = (argv, "latency", "amqp")
    workers = []
    try:
        workers = start_workers(name, queue, 10, 10, 1,
                                dict(BENCH_LAT_TARGET=str(n), BENCH_LAT_OUT=out))
        workers[0].go()
        time.sleep(1.0)  # connect, declare, consume
        pad = "x" * 40
        t0 = time.time()
        for i in range(n):
            due = t0 + i / rate
            while True:
                now = time.time()
                if now >= due:
                    break
                if due - now > 0.0005:
                    time.sleep(due - now - 0.0003)
            ch.basic_publish("", queue, '{"ts":%.6f,"id":%d,"pad":"%s"}' % (time.time(), i, pad))
        sent_rate = n / (time.time() - t0)
        deadline = time.time() + 60
        while not os.path.exists(out):
            conn.process_data_events(0)
            if time.time() > deadline or not workers[0].alive():
                raise RuntimeError(f"{name}: latency file never written")
            time.sleep(0.05)
        with open(out) as f:
            lags = sorted(float(x) * 1000 for x in f.read().split())
        os.unlink(out)
        pct = lambda p: lags[min(len(lags) - 1, int(p * len(lags)))]  # noqa: E731
        return dict(sent_per_s=round(sent_rate), p50_ms=round(pct(0.50), 3),
                    p99_ms=round(pct(0.99), 3), max_ms=round(lags[-1], 3))
    finally:
        CONTENDERS[name] = saved
        for w in workers:
            w.kill()
        ch.queue_delete(queue)
        conn.close()


def interleaved(reps: int, names, label: str, run) -> dict:
    """`run(name)` for every name, repetition after repetition (side by side on a noisy
    machine); a run that fails is recorded as its error."""
    results: dict = {}
    for rep in range(reps):
        for name in names:
            log(f"{label} rep {rep + 1}/{reps}: {name}")
            try:
                r = run(name)
            except Exception as e:
                r = dict(error=str(e))
            log(f"  {r}")
            results.setdefault(name, []).append(r)
    return results


def bench_latency(scale: dict, reps: int) -> dict:
    return interleaved(reps, ("cleats-ruby", "cleats-py-sync"),
                       f"latency at 2000 msg/s for {scale['latency_s']} s",
                       lambda name: latency_once(name, scale["latency_s"]))


def print_latency(results: dict) -> None:
    print("\n## Publish-to-work latency at 2,000 msg/s (prefetch 10, threads 10; median (min-max))\n")
    print("| contender | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    for name, rs in results.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            print(f"| {name} | error | | |")
            continue
        print(f"| {name} | " + " | ".join(fmt_spread(summarize([r[k] for r in ok]), 2)
                                            for k in ("p50_ms", "p99_ms", "max_ms")) + " |")


# ---------------------------------------------------------------- confirmed publishing

PUBLISHERS = {
    # name -> argv (the script gets QUEUE N as its last arguments). Like for like: cleats'
    # publish_batch and Bunny's wait_for_confirms both wait once per batch.
    "cleats-ruby Publisher#publish, 16 threads": [RUBY, os.path.join(BENCH, "publish", "cleats_publish.rb"), "16"],
    "cleats-ruby Publisher#publish_batch, batches of 100": [RUBY, os.path.join(BENCH, "publish", "cleats_publish.rb"), "batch100"],
    "cleats-ruby Publisher#publish_batch, batches of 1000": [RUBY, os.path.join(BENCH, "publish", "cleats_publish.rb"), "batch1000"],
    "cleats-py cleats.publish, 16 threads": [PY, os.path.join(BENCH, "publish", "cleats_publish.py"), "16"],
    "cleats-py cleats.publish_batch, batches of 100": [PY, os.path.join(BENCH, "publish", "cleats_publish.py"), "batch100"],
    "cleats-py cleats.publish_batch, batches of 1000": [PY, os.path.join(BENCH, "publish", "cleats_publish.py"), "batch1000"],
    "bunny confirms, wait_for_confirms every 1": [RUBY, os.path.join(BENCH, "publish", "bunny_publish.rb"), "1"],
    "bunny confirms, wait_for_confirms every 100": [RUBY, os.path.join(BENCH, "publish", "bunny_publish.rb"), "100"],
    "bunny confirms, wait_for_confirms every 1000": [RUBY, os.path.join(BENCH, "publish", "bunny_publish.rb"), "1000"],
    # References (Rust, own queue): the engine's publisher with no host language, and the rate
    # the broker takes messages in when nobody waits for confirms at all.
    "ceiling: engine publisher, batches of 1000": [CEILING, "publish", "{n}", "1000"],
    "ceiling: engine publisher, no confirms": [CEILING, "publish", "{n}", "1000", "noconfirms"],
}


def publish_once(name: str, n: int) -> dict:
    queue = f"cleats-bench-pub-{TAG}-{uuid.uuid4().hex[:6]}"
    conn, ch = channel()
    ch.queue_declare(queue, durable=False)
    conn.close()
    argv = PUBLISHERS[name]
    if "{n}" in argv:
        argv = [a.format(n=n) for a in argv]
    else:
        argv = argv + [queue, str(n)]
    try:
        b0 = broker_cpu()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, AMQP_URL=AMQP))
        _, status, usage = os.wait4(proc.pid, 0)
        out, err = proc.communicate()
        if status != 0:
            raise RuntimeError(f"{name}: {err.strip()[-500:]}")
        r = json.loads(out.strip().splitlines()[-1])
        r["cpu_us_per_msg_process"] = round((usage.ru_utime + usage.ru_stime) * 1e6 / n, 1)
        # Includes the broker's work on the publishes that were still queued when the
        # publisher exited (no confirms) and deleting the queue is not counted.
        r["broker_cpu_us_per_msg"] = round((broker_cpu() - b0) * 1e6 / n, 1)
        return r
    finally:
        delete_queues(queue)


def bench_publish(scale: dict, reps: int) -> dict:
    return interleaved(reps, PUBLISHERS, "publish", lambda name: publish_once(name, scale["publish"]))


def print_publish(results: dict) -> None:
    print("\n## Confirmed publishing (median (min-max))\n")
    base = None
    meds = {}
    for name, rs in results.items():
        ok = [r["msgs_per_s"] for r in rs if "error" not in r]
        if ok:
            meds[name] = statistics.median(ok)
    base = max((v for k, v in meds.items() if k.startswith("bunny")), default=None)
    print("| publisher | msg/s | x best Bunny | publisher CPU us/msg | broker CPU us/msg |")
    print("|---|---|---|---|---|")
    for name, rs in results.items():
        good = [r for r in rs if "error" not in r]
        if not good:
            print(f"| {name} | error | | | |")
            continue
        ratio = f"{meds[name] / base:.2f}" if base else "-"
        cpu = statistics.median(r["cpu_us_per_msg_process"] for r in good)
        broker = statistics.median(r.get("broker_cpu_us_per_msg", 0.0) for r in good)
        print(f"| {name} | {fmt_spread(summarize([r['msgs_per_s'] for r in good]))} | {ratio} "
              f"| {cpu:.1f} | {broker:.1f} |")


# ---------------------------------------------------------------- soak

def bench_soak(scale: dict) -> dict:
    n = scale["soak"]
    name = "cleats-ruby"
    queue = f"cleats-bench-soak-{TAG}"
    log(f"soak: {n} messages through {name} (prefetch 10, threads 10), RSS sampled every 0.5 s")
    conn, ch = channel()
    ch.queue_declare(queue, durable=False)
    conn.close()
    workers = start_workers(name, queue, 10, 10, 1)
    w = workers[0]
    samples = []
    try:
        w.go()
        pub = threading.Thread(target=publish_plain, args=(queue, n, False), daemon=True)
        pub.start()
        t0 = time.time()
        deadline = t0 + max(300, n / 1000)
        while w.done < n:
            if time.time() > deadline or not w.alive():
                raise RuntimeError(f"soak: {w.done} of {n} done")
            samples.append((round(time.time() - t0, 2), w.done, proc_status(w.proc.pid, "VmRSS")))
            time.sleep(0.5)
        samples.append((round(time.time() - t0, 2), w.done, proc_status(w.proc.pid, "VmRSS")))
        hwm = proc_status(w.proc.pid, "VmHWM")
    finally:
        w.kill()
        delete_queues(queue)
    warm = next((s for s in samples if s[1] >= n // 10), samples[0])
    after = [s for s in samples if s[1] >= warm[1]]
    return dict(messages=n, warmup_at_messages=warm[1], rss_kib_at_warmup=warm[2],
                rss_kib_end=samples[-1][2], rss_kib_max_after_warmup=max(s[2] for s in after),
                growth_mib=round((samples[-1][2] - warm[2]) / 1024, 1),
                growth_max_mib=round((max(s[2] for s in after) - warm[2]) / 1024, 1),
                peak_rss_mib=round(hwm / 1024, 1), elapsed_s=round(samples[-1][0], 1),
                samples=samples)


def print_soak(r: dict) -> None:
    print("\n## Soak (cleats-ruby, RSS of the worker process)\n")
    if "error" in r:
        print(f"error: {r['error']}")
        return
    print(f"{r['messages']} messages in {r['elapsed_s']} s; RSS after warm-up "
          f"({r['warmup_at_messages']} messages): {r['rss_kib_at_warmup'] / 1024:.1f} MiB, at the end: "
          f"{r['rss_kib_end'] / 1024:.1f} MiB (growth {r['growth_mib']} MiB, largest "
          f"{r['growth_max_mib']} MiB); peak {r['peak_rss_mib']} MiB")


# ---------------------------------------------------------------- main

def machine() -> dict:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        rabbit = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True,
                                timeout=30).stdout.strip()
    except Exception:
        rabbit = "unknown"
    return dict(nproc=os.cpu_count(), cpu=model, rabbitmq=rabbit,
                ruby=subprocess.run([RUBY, "-v"], capture_output=True, text=True).stdout.strip(),
                python=sys.version.split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default=os.environ.get("BENCH_SCALE", "quick"), choices=SCALES)
    ap.add_argument("--reps", type=int, default=int(os.environ.get("BENCH_REPS", "3")))
    ap.add_argument("--only", default="drain,latency,publish,soak")
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    args = ap.parse_args()
    scale = SCALES[args.scale]
    only = set(args.only.split(","))
    names = [n for n in args.contenders.split(",") if n]
    for n in names:
        if n not in CONTENDERS:
            ap.error(f"unknown contender {n} (known: {', '.join(CONTENDERS)})")
    os.makedirs(RESULTS, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = dict(started=started, scale=args.scale, reps=args.reps, params=scale, machine=machine(),
               command=" ".join(sys.argv))
    stamp = started.replace(":", "")
    path = os.path.join(RESULTS, f"bench-{stamp}.json")

    def save() -> None:
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)

    if "drain" in only:
        def partial(raw: dict) -> None:
            doc["drain_runs"] = raw
            save()

        raw = bench_drain(scale, args.reps, names, partial)
        doc["drain_runs"] = raw
        doc["drain"] = drain_table(raw, scale["drain"])
        save()
    if "latency" in only:
        doc["latency"] = bench_latency(scale, args.reps)
        save()
    if "publish" in only:
        doc["publish"] = bench_publish(scale, args.reps)
        save()
    if "soak" in only:
        try:
            doc["soak"] = bench_soak(scale)
        except Exception as e:
            doc["soak"] = dict(error=str(e))
        save()
    doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    save()

    m = doc["machine"]
    print(f"# cleats benchmarks, {started} to {doc['finished']} ({args.scale}, {args.reps} reps)")
    print(f"machine: {m['nproc']} x {m['cpu']}; RabbitMQ {m['rabbitmq']}; {m['ruby']}; "
          f"Python {m['python']}; drain N = {scale['drain']} messages of {len(BODY % (0, 0))} bytes")
    if "drain" in doc:
        print_drain(doc["drain"])
    if "latency" in doc:
        print_latency(doc["latency"])
    if "publish" in doc:
        print_publish(doc["publish"])
    if "soak" in doc:
        print_soak(doc["soak"])
    print(f"\nresults: {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
