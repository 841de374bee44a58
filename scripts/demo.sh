#!/usr/bin/env bash
# Runs the demo: workers consuming real messages from the local RabbitMQ, three ways:
#   1. the engine with a Rust worker (examples/demo.rs),
#   2. a Python app run by `cleats work` with 2 processes (examples/python/),
#   3. a Sneakers-style Ruby app run by `sneakers work` with 2 processes (examples/ruby/).
# It builds both bindings on the way (pip install . into .venv; the gem into target/ruby).
# The optional argument is the number of messages for each (default: 5000 Rust, 2000 others).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"

say "1/3 Rust: cargo run --release -p cleats-core --example demo${*:+ -- $*}"
cargo run --release -p cleats-core --example demo -- "$@"

say "2/3 Python: the cleats package, 'cleats work signup_worker:SignupWorker --workers 2'"
install_python_package
.venv/bin/python examples/python/run_demo.py "$@"

say "3/3 Ruby: the cleats gem, 'sneakers work SignupWorker --require boot.rb' (2 processes)"
install_ruby_gem
ruby examples/ruby/run_demo.rb "$@"

say "demo done"
