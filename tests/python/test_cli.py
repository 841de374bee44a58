"""The `cleats work` command in a child process: consuming real messages, draining on TERM with
nothing lost, `--workers 2` running two processes, USR1 restarting them, SIGINT stopping."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

import cleats
from conftest import AMQP_URL, consumers, counts, sigint_as_in_a_terminal, wait_for

APP = textwrap.dedent("""
    import os, time
    import cleats

    cleats.configure(amqp=os.environ["AMQP_URL"], exchange="", queue_options={"durable": False})
    OUT = os.environ["CLEATS_TEST_OUT"]
    DELAY = float(os.environ.get("CLEATS_TEST_DELAY", "0"))

    class AppWorker(cleats.Worker):
        queue_name = os.environ["CLEATS_TEST_QUEUE"]

        def work(self, msg):
            time.sleep(DELAY)
            with open(OUT, "a") as f:
                f.write(f"{os.getpid()} {msg.decode()}\\n")
            return self.ack()
""")


class App:
    def __init__(self, tmp_path: Path, queue: str, delay: float = 0.0) -> None:
        (tmp_path / "app_workers.py").write_text(APP)
        self.out = tmp_path / "processed.txt"
        self.out.touch()
        self.pid_path = tmp_path / "cleats.pid"
        self.tmp = tmp_path
        self.env = dict(os.environ, AMQP_URL=AMQP_URL, CLEATS_TEST_OUT=str(self.out),
                        CLEATS_TEST_QUEUE=queue, CLEATS_TEST_DELAY=str(delay),
                        PYTHONPATH=str(tmp_path))
        self.proc: subprocess.Popen | None = None

    def start(self, *args: str, command: List[str] | None = None) -> subprocess.Popen:
        cmd = command or [sys.executable, "-m", "cleats"]
        self.proc = subprocess.Popen(
            [*cmd, "work", "app_workers:AppWorker", "--pid-path", str(self.pid_path), *args],
            cwd=self.tmp, env=self.env, start_new_session=True,
            stdout=open(self.tmp / "cli.log", "ab"), stderr=subprocess.STDOUT)
        return self.proc

    def wait_consuming(self, processes: int = 1) -> None:
        wait_for(lambda: consumers(self.queue) >= processes, timeout=30,
                 what=f"{processes} consumer(s)\n{self.log()}")

    def lines(self) -> List[List[str]]:
        return [ln.split(" ", 1) for ln in self.out.read_text().splitlines()]

    def log(self) -> str:
        return (self.tmp / "cli.log").read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"cleats did not exit; its log:\n{self.log()}")


@pytest.fixture
def app(tmp_path, names):
    a = App(tmp_path, names.queue())
    a.queue = names.queues[-1]
    yield a
    if a.proc is not None and a.proc.poll() is None:
        os.killpg(a.proc.pid, signal.SIGKILL)
        a.proc.wait()


def test_consumes_and_drains_on_term_with_nothing_lost(app):
    app.env["CLEATS_TEST_DELAY"] = "0.2"
    total = 30
    app.start("--workers", "1", "--threads", "2", "--prefetch", "5")
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    for i in range(total):
        cleats.publish(f"m{i}", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) >= 4, timeout=30, what=f"some messages processed\n{app.log()}")
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.wait() == 0, app.log()
    done = [msg for _, msg in app.lines()]
    assert len(done) == len(set(done)), "a message was processed twice"
    ready, unacked = counts(app.queue)
    assert unacked == 0
    assert len(done) + ready == total, f"lost messages: {len(done)} done + {ready} left"
    assert len(done) < total, "TERM came too late to test the drain"
    assert not app.pid_path.exists()


def test_two_workers_are_two_processes(app):
    app.env["CLEATS_TEST_DELAY"] = "0.05"
    app.start("--workers", "2", "--threads", "1", "--prefetch", "1")
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    app.wait_consuming(2)
    master = int(app.pid_path.read_text())
    for i in range(40):
        cleats.publish(f"m{i}", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 40, timeout=60, what=f"every message\n{app.log()}")
    pids = {int(pid) for pid, _ in app.lines()}
    assert len(pids) == 2 and master not in pids
    os.kill(master, signal.SIGTERM)
    assert app.wait() == 0


def test_usr1_restarts_the_worker_processes(app):
    app.start("--workers", "1", "--threads", "1", command=[str(Path(sys.executable).parent / "cleats")])
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    cleats.publish("before", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 1, timeout=30, what=f"the first message\n{app.log()}")
    os.kill(app.proc.pid, signal.SIGUSR1)
    first = app.lines()[0][0]
    wait_for(lambda: "restarting it" in app.log(), timeout=30, what="the restart")
    app.wait_consuming()
    cleats.publish("after", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 2, timeout=30, what=f"the second message\n{app.log()}")
    assert app.lines()[1][0] != first
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.wait() == 0


def test_sigint_stops_a_foreground_worker(app):
    app.start("--workers", "1")
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    cleats.publish("one", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 1, timeout=30, what=f"the message\n{app.log()}")
    # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    os.killpg(app.proc.pid, signal.SIGINT)
    assert app.wait(timeout=30) == 0, app.log()
    assert counts(app.queue) == (0, 0)


def test_unknown_worker_names_are_reported(app):
    out = subprocess.run([sys.executable, "-m", "cleats", "work", "app_workers:Nope"],
                         cwd=app.tmp, env=app.env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "missing workers: app_workers:Nope" in out.stderr


def test_quit_stops_at_once_and_requeues_unfinished_work(app):
    app.env["CLEATS_TEST_DELAY"] = "30"  # nothing finishes before QUIT
    app.start("--workers", "1", "--threads", "2", "--prefetch", "2")
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    for i in range(3):
        cleats.publish(f"m{i}", to_queue=app.queue)
    wait_for(lambda: counts(app.queue) == (1, 2), timeout=30, what="two messages in progress")
    os.kill(app.proc.pid, signal.SIGQUIT)
    assert app.wait(timeout=30) == 0, app.log()
    assert app.lines() == []
    assert counts(app.queue) == (3, 0)


def test_fork_hooks_run_around_each_fork(app):
    (app.tmp / "runner_config.py").write_text(textwrap.dedent(f"""
        import os
        workers = 2
        def before_fork():
            with open({str(app.tmp / 'hooks.txt')!r}, "a") as f:
                f.write(f"before {{os.getpid()}}\\n")
        def after_fork():
            with open({str(app.tmp / 'hooks.txt')!r}, "a") as f:
                f.write(f"after {{os.getpid()}}\\n")
    """))
    app.start("--config", str(app.tmp / "runner_config.py"))
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming(2)
    master = int(app.pid_path.read_text())
    os.kill(master, signal.SIGTERM)
    assert app.wait() == 0, app.log()
    events = [ln.split() for ln in (app.tmp / "hooks.txt").read_text().splitlines()]
    assert [e for e, _ in events].count("before") == 2
    assert all(int(pid) == master for e, pid in events if e == "before")
    children = {int(pid) for e, pid in events if e == "after"}
    assert len(children) == 2 and master not in children


def test_hup_restarts_at_once_and_usr2_reloads_the_config_file(app):
    config_file = app.tmp / "runner_config.py"
    config_file.write_text("workers = 1\n")
    app.start("--config", str(config_file))
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    cleats.publish("one", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 1, timeout=30, what=f"the first message\n{app.log()}")
    os.kill(app.proc.pid, signal.SIGHUP)
    wait_for(lambda: "restarting it" in app.log(), timeout=30, what="the immediate restart")
    app.wait_consuming()
    cleats.publish("two", to_queue=app.queue)
    wait_for(lambda: len(app.lines()) == 2, timeout=30, what=f"the second message\n{app.log()}")
    assert app.lines()[0][0] != app.lines()[1][0]
    # USR2: the config file now asks for two processes.
    config_file.write_text("workers = 2\n")
    os.kill(app.proc.pid, signal.SIGUSR2)
    app.wait_consuming(2)
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.wait() == 0, app.log()


def test_ctrl_c_stops_cleats_run_in_the_foreground(tmp_path, names):
    q = names.queue()
    script = tmp_path / "foreground.py"
    script.write_text(textwrap.dedent(f"""
        import os, cleats
        cleats.configure(amqp=os.environ["AMQP_URL"], exchange="", queue_options={{"durable": False}})

        class Foreground(cleats.Worker):
            queue_name = {q!r}

            def work(self, msg):
                print("worked", msg.decode(), flush=True)
                return self.ack()

        cleats.run(Foreground)
        print("stopped cleanly", flush=True)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], env=dict(os.environ, AMQP_URL=AMQP_URL),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    try:
        wait_for(lambda: consumers(q) == 1, timeout=30, what="the consumer")
        cleats.publish("hello", to_queue=q)
        wait_for(lambda: counts(q) == (0, 0), what="the ack")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "worked hello" in out and "stopped cleanly" in out


def test_log_option_writes_to_a_file(app):
    log_file = app.tmp / "worker.log"
    app.start("--workers", "1", "--log", str(log_file))
    wait_for(lambda: app.pid_path.exists(), what="the pid file")
    app.wait_consuming()
    os.kill(app.proc.pid, signal.SIGTERM)
    assert app.wait() == 0
    text = log_file.read_text()
    # The engine's own line (forwarded through logging) and the runner's, in Sneakers' format.
    assert "INFO: connected to amqp://guest:***@" in text
    assert "INFO: consuming " in text and " p-" in text
