#!/usr/bin/env bash
# Runs the whole suite: installs into .venv (with test extras) on first run, lints and checks
# the import layering, then pytest (unit tests, then integration tests against a real vLLM engine
# on the demo model). Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh test
echo "==> lint (ruff) and import layering (import-linter)" >&2
.venv/bin/ruff check src tests deploy bench
.venv/bin/lint-imports --no-cache
echo "==> pytest" >&2
# pytest exits 5 when it collects no test: that is a failure here too.
exec .venv/bin/python -m pytest "$@"
