#!/usr/bin/env bash
# Runs the Python package's tests: builds and installs `cleats` into .venv from the repository
# root (`pip install .`, as a user would), then runs pytest on tests/python against the local
# RabbitMQ. Arguments go to pytest: `scripts/test-python.sh -k maxretry`.
# Exits non-zero on failure, and when pytest collected no test (its exit code 5).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bash "$CLEATS_ROOT/scripts/setup.sh"
cleats_env
cd "$CLEATS_ROOT"
install_python_package
say "pytest tests/python${*:+ $*}"
status=0
.venv/bin/python -m pytest tests/python "$@" || status=$?
if [ "$status" -eq 5 ]; then
  die "pytest collected no tests"
fi
exit "$status"
