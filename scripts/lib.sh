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

# Builds the Python package and installs it into .venv (`pip install .`, as a user would).
install_python_package() {
  # The build backend runs the virtualenv's maturin (installed by setup.sh), found on PATH.
  export PATH="$CLEATS_ROOT/.venv/bin:$PATH"

  say "pip install . (the cleats package, built with maturin) into .venv"
  (cd "$CLEATS_ROOT" && .venv/bin/python -m pip install -q --disable-pip-version-check \
    --force-reinstall --no-deps --no-build-isolation .)
}

# Builds the gem (cleats.gemspec) and installs it into GEM_HOME=target/ruby/gems, its extension
# compiled by cargo through extconf.rb as a user's `gem install` does. Exports GEM_HOME.
install_ruby_gem() {
  local out sum
  out="$CLEATS_ROOT/target/ruby"
  export GEM_HOME="$out/gems"
  mkdir -p "$out"

  say "gem build cleats.gemspec"
  (cd "$CLEATS_ROOT" && gem build --silent cleats.gemspec --output "$out/cleats.gem")

  # A gem whose content did not change is not reinstalled (the extension build takes a while).
  sum="$(sha256sum "$out/cleats.gem" | cut -d' ' -f1)"
  if [ "$(cat "$out/installed.sha256" 2>/dev/null)" != "$sum" ] || [ ! -d "$GEM_HOME/gems" ]; then
    say "gem install (GEM_HOME=${GEM_HOME#"$CLEATS_ROOT"/}; the extension compiles with cargo)"
    rm -f "$out/installed.sha256"
    # A failed install can leave a half-installed copy that a new install does not replace.
    rm -rf "$GEM_HOME"/gems/cleats-* "$GEM_HOME"/specifications/cleats-* "$GEM_HOME"/extensions/*/*/cleats-*
    # The cargo build directory is kept between runs so that a reinstall rebuilds only what changed.
    CARGO_TARGET_DIR="$out/gem-build" gem install --local --no-document "$out/cleats.gem"
    echo "$sum" >"$out/installed.sha256"
  else
    say "gem install: unchanged since the last install"
  fi
}
