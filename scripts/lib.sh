# shellcheck shell=bash
# Helpers shared by the scripts in scripts/ and .ci/run. Source it; it sets no shell options.

CLEATS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CLEATS_ROOT

# One short progress line.
say() { printf '==> %s\n' "$*"; }

# Print an error and stop.
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Put ~/.cargo/bin (or $CARGO_HOME/bin) on PATH if it is not there, and check that cargo runs.
cleats_path() {
  local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
  case ":$PATH:" in
    *":$bin:"*) ;;
    *) if [ -d "$bin" ]; then PATH="$bin:$PATH"; fi ;;
  esac
  # rabbitmq-server, rabbitmqctl and friends live in /usr/sbin.
  case ":$PATH:" in
    *":/usr/sbin:"*) ;;
    *) PATH="$PATH:/usr/sbin:/sbin" ;;
  esac
  export PATH
  command -v cargo >/dev/null 2>&1 ||
    die "cargo not found on PATH nor in $bin: install Rust with rustup first"
}

# Environment for building and testing: PATH, backtraces, the broker URL (unless already set).
cleats_env() {
  cleats_path
  export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
  export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
}

# True when something accepts TCP connections on 127.0.0.1:5672.
broker_answers() {
  timeout 1 bash -c '</dev/tcp/127.0.0.1/5672' 2>/dev/null
}
