"""The GIL boundary: a thread waiting in `Pool.next` releases the GIL and still answers Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

from cleats import _engine
from conftest import AMQP_URL, consumers, sigint_as_in_a_terminal, wait_for


def test_other_threads_run_while_one_waits_for_a_delivery(names):
    engine = _engine.Engine({"amqp": AMQP_URL, "exchange": "", "queue_options": {"durable": False}})
    worker = engine.add_worker("Idle", names.queue())
    engine.start()
    try:
        ticks = []
        stop = threading.Event()

        def spin():
            while not stop.is_set():
                ticks.append(1)
                time.sleep(0.001)

        t = threading.Thread(target=spin)
        t.start()
        before = len(ticks)
        assert worker.pool.next(1.0) is None  # nothing published: a timeout after 1 s
        stop.set()
        t.join()
        assert len(ticks) - before > 50, "the spinning thread did not run: the GIL was held"
    finally:
        engine.stop()


def test_ctrl_c_interrupts_a_long_wait_in_next(tmp_path, names):
    q = names.queue()
    script = tmp_path / "wait.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        from cleats import _engine
        engine = _engine.Engine({{"amqp": os.environ["AMQP_URL"], "exchange": "",
                                  "queue_options": {{"durable": False}}}})
        worker = engine.add_worker("Waiter", {q!r})
        engine.start()
        try:
            worker.pool.next(600.0)
            print("returned", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
        finally:
            engine.stop()
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, AMQP_URL=AMQP_URL),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        wait_for(lambda: consumers(q) == 1, timeout=30, what="the consumer")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)  # far less than the 600 s wait
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in out, out
    assert proc.returncode == 0, out
