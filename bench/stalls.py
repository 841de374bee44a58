"""Where a drain's time goes at the consumer's socket, and what the broker's queue process does
meanwhile. A diagnostic behind docs/performance.md (profile note "The broker's queue pauses"), not part of
scripts/bench.sh; it needs perf (Debian's linux-perf) and rabbitmqctl, and runs as root.

  .venv/bin/python bench/stalls.py [--contender cleats-ruby] [--n 330000] [--prefetch 10]
                                   [--seconds 4]

Drains a prefilled queue with one contender, as bench/run.py does. Once the queue drains it
records, for --seconds, the consumer process's socket calls (perf tracepoints
raw_syscalls:sys_enter/sys_exit), then for as long again where the machine's CPU goes (perf
cpu-clock on every CPU). From the socket calls: the broker's answer (an ack written -> the next
deliveries read), the consumer's own turn (deliveries read -> the next ack written), and the
pauses: answers that took longer than --pause-ms. Around the trace it reads the queue process's
heap and its count of minor collections since the last full sweep (rabbitmqctl eval).

Contenders: ceiling, broker-acks, cleats-ruby, cleats-py-sync (they read with recvfrom and write
with sendto; Bunny and pika use read and write). Tracing every system call slows the consumer,
so compare the shares and the pauses, not the rates, with bench/run.py's.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import pika

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the harness: prefill, worker processes, the ceiling binary)

RECVFROM, SENDTO = 45, 44  # x86_64 system call numbers
SUPPORTED = ("ceiling", "broker-acks", "cleats-ruby", "cleats-py-sync")


def queue_process(queue: str) -> tuple[float, int] | None:
    """(heap MiB, minor collections since the last full sweep) of `queue`'s process."""
    expr = (f'{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<"/">>, queue, <<"{queue}">>)),'
            ' [{total_heap_size, H}, {garbage_collection, G}] = erlang:process_info('
            'amqqueue:get_pid(Q), [total_heap_size, garbage_collection]),'
            ' {H * erlang:system_info(wordsize), proplists:get_value(minor_gcs, G)}.')
    out = subprocess.run(["rabbitmqctl", "eval", expr], capture_output=True, text=True).stdout
    m = re.search(r"\{(\d+),(\d+)\}", out)
    return (int(m.group(1)) / 2**20, int(m.group(2))) if m else None


def ready(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def start(name: str, n: int, prefetch: int):
    """Starts the contender on a queue of `n` messages; returns (pid, queue, stop)."""
    if name in ("ceiling", "broker-acks"):
        # bench/ceiling.rs prefills and names its queue after its pid.
        argv = [run.CEILING, str(n), str(prefetch), "10"]
        if name == "broker-acks":
            argv = [run.CEILING, "wire", str(n), str(prefetch), "multiple"]
        proc = subprocess.Popen(argv, env=dict(os.environ, AMQP_URL=run.AMQP),
                                stdout=subprocess.DEVNULL)
        return proc.pid, f"cleats-bench-ceiling-{proc.pid}", proc.kill
    queue = f"cleats-stalls-{uuid.uuid4().hex[:6]}"
    run.publish_plain(queue, n)
    workers = run.start_workers(name, queue, prefetch, 10, 1)
    workers[0].go()

    def stop():
        workers[0].kill()
        run.delete_queues(queue)
    return workers[0].proc.pid, queue, stop


def wait_draining(ch, queue: str, n: int, timeout: float = 120):
    """Until `queue` holds all `n` messages and then fewer: the consumer is at work. Returns an
    open channel (a passive declare of a missing queue closes the one it was given)."""
    deadline, full = time.time() + timeout, False
    while time.time() < deadline:
        try:
            count = ready(ch, queue)
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet (the ceiling does it)
            _, ch = run.channel()
            time.sleep(0.05)
            continue
        full = full or count >= n
        if full and count < n:
            return ch
        time.sleep(0.05)
    raise RuntimeError(f"{queue} did not start draining")


def socket_timeline(data: str) -> list:
    """[(time, 'R' | 'S', bytes)]: deliveries read (recvfrom > 0) and frames written (sendto)."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "tid,time,event,trace"],
                         capture_output=True, text=True).stdout
    entered, events = {}, []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+)"
                     r"(?:.*= (-?\d+))?", line)
        if not m:
            continue
        tid, ts, kind, nr = m.group(1), float(m.group(2)), m.group(3), int(m.group(4))
        if kind == "enter":
            entered[tid] = ts
        elif (start_ts := entered.pop(tid, None)) is not None:
            ret = int(m.group(5))
            if nr == RECVFROM and ret > 0:
                events.append((ts, "R", ret))
            elif nr == SENDTO and ret > 0:
                events.append((start_ts, "S", ret))
    return sorted(events)


def cpu_shares(data: str, consumer: int) -> dict:
    """Share of the machine's CPU samples: idle, the broker (its dirty CPU schedulers, where the
    VM collects large heaps, apart), the consumer process, everything else."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,comm"],
                         capture_output=True, text=True).stdout
    shares, total = collections.Counter(), 0
    for line in out.splitlines():
        fields = line.rsplit(None, 1)  # "<comm> <pid>"
        if len(fields) < 2 or not fields[1].isdigit():
            continue
        comm, pid = fields[0].strip(), int(fields[1])
        total += 1
        if pid == 0:
            shares["idle"] += 1
        elif pid == run.BROKER:
            shares["broker, dirty CPU schedulers" if "dirty_cpu" in comm else "broker, other"] += 1
        elif pid == consumer:
            shares["consumer"] += 1
        else:
            shares["other"] += 1
    return {group: count / total for group, count in shares.items()} if total else {}


def quantiles(xs: list) -> str:
    if len(xs) < 10:
        return "-"
    q = statistics.quantiles(xs, n=10)
    return f"p10 {q[0]:.0f} / p50 {q[4]:.0f} / p90 {q[8]:.0f} us"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contender", default="cleats-ruby", choices=SUPPORTED)
    ap.add_argument("--n", type=int, default=330_000)
    ap.add_argument("--prefetch", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--pause-ms", type=float, default=3.0)
    args = ap.parse_args()
    if not shutil.which("perf"):
        sys.exit("bench/stalls.py needs perf: apt-get install linux-perf")
    _conn, ch = run.channel()
    pid, queue, stop = start(args.contender, args.n, args.prefetch)
    tmp = tempfile.mkdtemp(prefix="cleats-stalls-")
    syscalls, cpu = os.path.join(tmp, "syscalls.data"), os.path.join(tmp, "cpu.data")
    try:
        ch = wait_draining(ch, queue, args.n)
        time.sleep(0.5)  # past connecting and the first windows
        heap_before = queue_process(queue)
        left0, t0 = ready(ch, queue), time.time()
        subprocess.run(["perf", "record", "-q", "-e", "raw_syscalls:sys_enter,raw_syscalls:sys_exit",
                        "-p", str(pid), "-o", syscalls, "--", "sleep", str(args.seconds)],
                       check=True, stderr=subprocess.DEVNULL)
        left1, wall = ready(ch, queue), time.time() - t0
        subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-a", "-o", cpu, "--",
                        "sleep", str(args.seconds)], check=True, stderr=subprocess.DEVNULL)
        heap_after = queue_process(queue)
    finally:
        stop()
    events = socket_timeline(syscalls)
    cpu_share = cpu_shares(cpu, pid)
    shutil.rmtree(tmp, ignore_errors=True)

    answers, turns, pauses = [], [], []
    for (t0, k0, _), (t1, k1, _) in zip(events, events[1:]):
        gap = (t1 - t0) * 1e6
        if k0 == "S" and k1 == "R":
            (pauses if gap > args.pause_ms * 1e3 else answers).append(gap)
        elif k0 == "R" and k1 == "S":
            turns.append(gap)
    span = events[-1][0] - events[0][0]
    paused = sum(pauses) / 1e6
    consumed = left0 - left1
    print(f"{args.contender}, prefetch {args.prefetch}, {args.n} messages prefilled;"
          f" {args.seconds:.0f} s of socket calls traced, {consumed} messages consumed")
    print(f"  reads {sum(k == 'R' for _, k, _ in events)},"
          f" writes {sum(k == 'S' for _, k, _ in events)}")
    print(f"  the broker's answer (ack written -> deliveries read): {quantiles(answers)}")
    print(f"  the consumer's turn (deliveries read -> ack written): {quantiles(turns)}")
    print(f"  pauses (answers after more than {args.pause_ms:g} ms): {len(pauses)},"
          f" {paused * 1e3:.0f} ms of {span * 1e3:.0f} ({paused / span:.2f});"
          f" longest {max(pauses, default=0) / 1e3:.0f} ms")
    # The queue's count is read just before and after perf, whose start and end the trace
    # does not cover: the pauses are taken to fill the same share of that time.
    rate = consumed / wall
    print(f"  rate while traced: {rate:.0f} msg/s; outside the pauses"
          f" {rate / (1 - paused / span):.0f} msg/s")
    for label, h in (("before", heap_before), ("after", heap_after)):
        if h:
            print(f"  queue process {label}: heap {h[0]:.0f} MiB,"
                  f" {h[1]} minor collections since its last full sweep")
    print("  CPU of the machine, next " + f"{args.seconds:.0f} s: "
          + ", ".join(f"{g} {share:.2f}" for g, share in sorted(cpu_share.items(),
                                                                   key=lambda x: -x[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
