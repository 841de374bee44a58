#!/usr/bin/env bash
# Installs what cleats needs to build and test, and makes sure a RabbitMQ answers on 127.0.0.1:5672:
#   apt packages (only the missing ones), rustfmt and clippy, a virtualenv at .venv with maturin and
#   pytest, and a running broker (started with `rabbitmq-server -detached` when none answers).
# Safe to run again: when everything is there it only checks, in about a second.
# scripts/test.sh and scripts/demo.sh run it first.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$CLEATS_ROOT"

APT_PACKAGES=(rabbitmq-server ruby ruby-dev libclang-dev clang pkg-config build-essential
  ruby-serverengine ruby-minitest rake ruby-activejob)
BROKER_WAIT_SECONDS=90

apt_installed() {
  dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

venv_ready() {
  [ -x .venv/bin/python ] && [ -e .venv/bin/pip ]
}

ensure_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    apt_installed "$p" || missing+=("$p")
  done
  # `python3 -m venv` needs ensurepip, which Debian ships in python3-venv.
  if ! venv_ready && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  if [ ${#missing[@]} -eq 0 ]; then
    say "apt packages: all present"
    return
  fi
  say "apt packages: installing ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root to install: ${missing[*]}"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 \
    install -y --no-install-recommends "${missing[@]}"
}

ensure_rust_components() {
  cleats_path
  local missing=()
  cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
  if [ ${#missing[@]} -eq 0 ]; then
    say "rust: $(cargo --version), rustfmt and clippy present"
    return
  fi
  command -v rustup >/dev/null 2>&1 || die "missing ${missing[*]} and no rustup to add them"
  say "rust: rustup component add ${missing[*]}"
  rustup component add "${missing[@]}"
}

ensure_venv() {
  command -v python3 >/dev/null 2>&1 || die "python3 not found"
  if ! venv_ready; then
    if [ -e .venv ]; then
      say "python: .venv is incomplete, recreating it"
      rm -rf .venv
    fi
    say "python: creating virtualenv .venv ($(python3 --version))"
    python3 -m venv .venv || die "python3 -m venv .venv failed (is python3-venv installed for this python3?)"
  fi
  local want=()
  [ -x .venv/bin/maturin ] || want+=(maturin)
  .venv/bin/python -c 'import pytest' >/dev/null 2>&1 || want+=(pytest)
  if [ ${#want[@]} -eq 0 ]; then
    say "python: .venv has maturin and pytest"
    return
  fi
  say "python: pip install ${want[*]} into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check "${want[@]}"
}

# Last lines of the broker's logs, to explain a failed start.
broker_logs() {
  local f
  for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log /var/log/rabbitmq/*.log; do
    [ -s "$f" ] || continue
    printf -- '--- %s (last 20 lines)\n' "$f" >&2
    tail -n 20 "$f" >&2 || true
  done
}

broker_process_running() {
  id rabbitmq >/dev/null 2>&1 && pgrep -u rabbitmq -x beam.smp >/dev/null 2>&1
}

ensure_broker() {
  if broker_answers; then
    say "rabbitmq: answering on 127.0.0.1:5672"
    return
  fi
  cleats_path
  command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server not installed and nothing answers on 127.0.0.1:5672"
  # The default node name is rabbit@<short hostname>; Erlang cannot start it if that name does not resolve.
  if [ -z "${RABBITMQ_NODENAME:-}" ] &&
    ! grep -qs '^[[:space:]]*NODENAME=' /etc/rabbitmq/rabbitmq-env.conf &&
    ! getent hosts "$(hostname -s)" >/dev/null 2>&1; then
    export RABBITMQ_NODENAME=rabbit@localhost
  fi
  # A node whose port is down may be booting (wait for it) or still shutting down (wait for it to exit,
  # then start one). Only one start attempt: if that node exits too, fail with its logs.
  local waited=0 started_at=-1
  until broker_answers; do
    if [ "$waited" -ge "$BROKER_WAIT_SECONDS" ]; then
      broker_logs
      die "RabbitMQ did not answer on 127.0.0.1:5672 within ${BROKER_WAIT_SECONDS}s"
    fi
    if ! broker_process_running; then
      if [ "$started_at" -lt 0 ]; then
        say "rabbitmq: nothing answers on 127.0.0.1:5672, starting rabbitmq-server -detached"
        rabbitmq-server -detached || {
          broker_logs
          die "rabbitmq-server -detached failed"
        }
        started_at=$waited
      elif [ $((waited - started_at)) -ge 10 ]; then
        broker_logs
        die "RabbitMQ exited while starting (see the logs above)"
      fi
    elif [ "$waited" -eq 0 ]; then
      say "rabbitmq: a node is running but 127.0.0.1:5672 does not answer yet, waiting"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "rabbitmq: started, answering on 127.0.0.1:5672 after ${waited}s"
}

ensure_apt_packages
ensure_rust_components
ensure_venv
ensure_broker
say "setup done"
