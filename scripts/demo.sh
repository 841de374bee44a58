#!/usr/bin/env bash
# Runs the demo (examples/demo.rs): publishes a few thousand messages to the local RabbitMQ and runs
# workers that consume them, printing what was processed. Arguments go to the demo.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"

say "cargo run --release -p cleats-core --example demo --${*:+ $*}"
exec cargo run --release -p cleats-core --example demo -- "$@"
