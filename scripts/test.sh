#!/usr/bin/env bash
# Runs every test: setup, then formatting, clippy, a build of the whole workspace (engine and both
# bindings) and the tests against the local RabbitMQ.
# Extra arguments go to `cargo test`: `scripts/test.sh recovery` runs only the tests matching "recovery".
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"

say "cargo fmt --all --check"
cargo fmt --all --check
say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
say "cargo build --workspace"
cargo build --workspace
say "cargo test --workspace${*:+ $*}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
say "python: scripts/test-python.sh"
bash "$CLEATS_ROOT/scripts/test-python.sh" 2>&1 | tee -a "$log"
say "ruby: scripts/test-ruby.sh"
bash "$CLEATS_ROOT/scripts/test-ruby.sh" 2>&1 | tee -a "$log"
# One total over every suite: cargo's test binaries (unit, integration, doc), pytest, minitest.
awk '/^[0-9]+ runs, [0-9]+ assertions, / { p += $1 - $5 - $7 - $9; f += $5 + $7 }
     /^=+ .* in [0-9.]+s/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^failed,?$/) f += $(i-1) } }
     /^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
say "all tests passed"
