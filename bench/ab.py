"""Side-by-side comparison of two builds of the Ruby gem or of the Python package: drains with
one, then the other, in alternating order, and prints each run and the medians. For measuring an
engine or binding change on a noisy machine, where only interleaved runs compare.

Build each side's gem into a directory of its own first, e.g.:
    git checkout <before>; source scripts/lib.sh; cleats_env; install_ruby_gem
    cp -r target/ruby/gems /tmp/gems-before   # then the same at <after>
and run, from the repository root:
    .venv/bin/python bench/ab.py /tmp/gems-before /tmp/gems-after --prefetch 10 --reps 8
    .venv/bin/python bench/ab.py /tmp/gems-before /tmp/gems-after --mode varied -n 20000
For a Python contender (--contender cleats-py-sync), each side is a directory holding a `cleats`
package (copied from .venv/lib/python3.11/site-packages after `pip install .`), put first on
PYTHONPATH:
    .venv/bin/python bench/ab.py /tmp/py-before /tmp/py-after --contender cleats-py-sync
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/run.py: the harness the full benchmark uses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("gems_a", help="build A: a GEM_HOME with the gem, or a directory holding "
                    "the cleats Python package")
    ap.add_argument("gems_b", help="build B, likewise")
    ap.add_argument("--contender", default="cleats-ruby",
                    help="a cleats contender of bench/run.py (cleats-ruby, cleats-py-sync, ...)")
    ap.add_argument("--mode", help="the worker's work instead of the contender's own, e.g. "
                    "varied (bench/workers/cleats_worker.rb: 0-4 ms of sleep, out of order) or "
                    "pause (a sleep of BENCH_PAUSE seconds, without the GVL) or spin (a CPU-bound "
                    "loop of BENCH_SPIN steps)")
    ap.add_argument("--prefetch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--procs", type=int, default=1, help="worker processes per run (CPU per "
                    "message sums them; per-thread figures are the first process's)")
    ap.add_argument("--reps", type=int, default=6, help="runs of each build")
    ap.add_argument("-n", type=int, default=200_000, help="messages per run")
    args = ap.parse_args()
    python = run.CONTENDERS[args.contender][0][0] == run.PY
    # Where each side's build is looked up: the gem under GEM_HOME, the package on PYTHONPATH.
    variable, inside = ("PYTHONPATH", "cleats") if python else ("GEM_HOME", "gems")
    for home in (args.gems_a, args.gems_b):
        if not os.path.isdir(os.path.join(home, inside)):
            sys.exit(f"{home}: no {inside}/ in it, not a build for {args.contender} "
                     "(see the docstring)")

    if args.mode:
        argv, _, kind = run.CONTENDERS[args.contender]
        run.CONTENDERS[args.contender] = (argv, args.mode, kind)
    os.makedirs(run.RESULTS, exist_ok=True)
    results = {"A": [], "B": []}
    homes = {"A": args.gems_a, "B": args.gems_b}
    for rep in range(args.reps):
        # Alternating the order keeps a machine that drifts from favouring one side.
        for side in ("A", "B") if rep % 2 == 0 else ("B", "A"):
            os.environ[variable] = homes[side]
            r = run.drain_once(args.contender, args.n, args.prefetch, args.threads, args.procs)
            results[side].append(r)
            threads = {k: round(v * 1e6 / args.n, 1)
                       for k, v in r.get("threads_cpu_s", {}).items() if v > 0.05}
            print(f"{side} {r['msgs_per_s']} msg/s, {r['cpu_us_per_msg']} us/msg, broker "
                  f"{r['broker_cpu_us_per_msg']} us/msg, per thread (us/msg) {threads}",
                  flush=True)
    for side in ("A", "B"):
        runs = results[side]

        def med(key):
            return statistics.median(r[key] for r in runs)

        print(f"{side} ({homes[side]}): medians {med('msgs_per_s'):.0f} msg/s, "
              f"{med('cpu_us_per_msg'):.1f} us/msg, broker {med('broker_cpu_us_per_msg'):.1f} us/msg")


if __name__ == "__main__":
    main()
