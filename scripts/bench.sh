#!/usr/bin/env bash
# Runs the benchmarks (issue 5; never part of the test suite): every contender side by side against
# the local RabbitMQ, several repetitions; prints tables and writes bench/results/bench-<time>.json.
#   scripts/bench.sh                  quick mode (drain runs of a few seconds; about 10 minutes)
#   BENCH_SCALE=full scripts/bench.sh full mode (drain runs of 10 s or more, 1M-message soak; ~45 min)
# Other arguments go to bench/run.py: --reps N, --only drain,latency,publish,soak,
# --contenders ceiling,cleats-ruby,... (see bench/run.py).
# Installs what the benchmarks need: ruby-bunny and ruby-concurrent (the Bunny peer), pika and
# dramatiq into .venv (the Python peers); builds the release ceiling example and both bindings.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"

missing=()
for p in ruby-bunny ruby-concurrent; do
  dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt packages for the Ruby peer: installing ${missing[*]}"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 \
    install -y --no-install-recommends "${missing[@]}"
fi
if ! .venv/bin/python -c 'import pika, dramatiq' >/dev/null 2>&1; then
  say "python peers: pip install pika dramatiq into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check pika dramatiq
fi

say "cargo build --release -p cleats-core --example ceiling"
cargo build --release -p cleats-core --example ceiling
install_python_package
install_ruby_gem

say "benchmarks (${BENCH_SCALE:-quick})"
exec .venv/bin/python bench/run.py "$@"
