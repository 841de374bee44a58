"""The `cleats` command (also `python -m cleats`):

    cleats work module:WorkerClass[,module:Other] [--require path] [--workers N] [--threads T]
                [--prefetch P] [--log FILE] [--pid-path FILE] [--config FILE]

With no worker names it runs every `cleats.Worker` subclass the required code defined.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from typing import List, Optional, Type

from . import log
from . import configuration as config
from .supervisor import Supervisor
from .worker import Worker, resolve, worker_classes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cleats", description="RabbitMQ workers on the cleats engine")
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("work", help="run worker classes (forks --workers processes)")
    work.add_argument("workers_spec", nargs="?", default="",
                      help="comma-separated module:WorkerClass (default: every cleats.Worker defined)")
    work.add_argument("--require", "-r", action="append", default=[],
                      help="a Python file or module to load first (repeatable)")
    work.add_argument("--workers", "-w", type=int, help="worker processes (default: the `workers` option, 4)")
    work.add_argument("--threads", "-t", type=int, help="work threads per worker in each process")
    work.add_argument("--prefetch", "-p", type=int, help="unacknowledged messages per consumer")
    work.add_argument("--log", help="log to FILE (default: standard output)")
    work.add_argument("--log-level", help="debug, info, warning or error")
    work.add_argument("--pid-path", help="write the master's pid to FILE")
    work.add_argument("--config", help="runner config file (Python: workers, before_fork, after_fork, ...)")
    return parser


def _require(target: str) -> None:
    if target.endswith(".py") or os.path.sep in target:
        path = os.path.abspath(target)
        sys.path.insert(0, os.path.dirname(path))
        runpy.run_path(path, run_name="__cleats_require__")
    else:
        importlib.import_module(target)


def _classes(spec: str) -> List[Type[Worker]]:
    if not spec:
        found = worker_classes()
        if not found:
            raise SystemExit("cleats: no workers: define cleats.Worker subclasses (with a queue) "
                             "in the code given to --require, or name them: module:WorkerClass")
        return found
    classes, missing = [], []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        try:
            classes.append(resolve(name))
        except (ImportError, AttributeError, ValueError, TypeError) as e:
            missing.append(f"{name} ({e})")
    if missing:
        raise SystemExit("cleats: missing workers: " + ", ".join(missing))
    return classes


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    # Worker modules given as module:Class are importable from the current directory.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for target in args.require:
        _require(target)
    # After --require: an app that configured `log` itself keeps its logger unless --log is given.
    configured = config.configured_keys()
    if args.log or "log" not in configured:
        log.configure_from(args.log or "STDOUT")
    level = args.log_level or (config.get("log_level") if "log_level" in configured else "info")
    log.configure_from(None, level)
    classes = _classes(args.workers_spec)
    overrides = {k: v for k, v in (("threads", args.threads), ("prefetch", args.prefetch)) if v is not None}
    workers = args.workers if args.workers is not None else int(config.get("workers") or 1)
    if workers < 1:
        raise SystemExit("cleats: --workers must be at least 1")
    pid_path = args.pid_path or None
    return Supervisor(classes, workers=workers, options=overrides, pid_path=pid_path,
                      config_file=args.config or config.get("runner_config_file")).run()


if __name__ == "__main__":
    raise SystemExit(main())
