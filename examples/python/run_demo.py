"""Runs the Python demo: `cleats work` with 2 worker processes consumes published signups,
then TERM drains and stops it. Run by scripts/demo.sh with the package installed in .venv."""

import collections
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
COUNT = int(sys.argv[1]) if len(sys.argv) > 1 else 2000


def main() -> int:
    out = tempfile.NamedTemporaryFile(prefix="cleats-demo-", suffix=".txt", delete=False).name
    os.environ["DEMO_OUT"] = out
    sys.path.insert(0, HERE)
    import cleats
    from signup_worker import SignupWorker

    cli = os.path.join(os.path.dirname(sys.executable), "cleats")
    master = subprocess.Popen([cli, "work", "signup_worker:SignupWorker", "--workers", "2",
                               "--log", out + ".log"], cwd=HERE)
    try:
        # The workers declare the queue; until then a mandatory publish comes back.
        deadline = time.monotonic() + 60
        while True:
            try:
                cleats.publish({"id": 0}, to_queue=SignupWorker.queue_name,
                               content_type="application/json", mandatory=True)
                break
            except cleats.UnroutableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        started = time.monotonic()
        for i in range(1, COUNT):
            SignupWorker.enqueue({"id": i})
        lines = []
        while time.monotonic() < started + 60:
            with open(out) as f:
                lines = f.read().split()
            if len(lines) // 2 >= COUNT:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        master.send_signal(signal.SIGTERM)  # graceful: drain, then exit
        code = master.wait(timeout=60)
    by_pid = collections.Counter(lines[0::2])
    ids = set(lines[1::2])
    print(f"python: {len(lines) // 2} messages consumed by {len(by_pid)} worker processes "
          f"({', '.join(f'pid {p}: {n}' for p, n in sorted(by_pid.items()))}) "
          f"in {elapsed:.2f}s; TERM stopped the master with exit code {code}")
    for path in (out, out + ".log"):
        if os.path.exists(path):
            os.unlink(path)
    if len(ids) != COUNT or code != 0:
        print(f"python demo failed: {len(ids)} of {COUNT} distinct messages, exit code {code}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
