#!/usr/bin/env bash
# Runs the whole suite: installs into .venv (with test extras) on first run, lints and checks
# the import layering, then pytest (unit tests, then integration tests against a real vLLM engine
# on the demo model). Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh test
# docker-compose.yml is checked with `docker-compose config` (Debian's package): install it once.
if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "==> installing docker-compose (Debian package) for the deployment tests" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    else
        echo "docker-compose is missing and cannot be installed here (needs root and apt-get):" \
            "the deployment tests will fail until it is installed" >&2
    fi
fi
echo "==> lint (ruff) and import layering (import-linter)" >&2
.venv/bin/ruff check src tests deploy bench
.venv/bin/lint-imports --no-cache
# The store tests need PostgreSQL: this machine's on 127.0.0.1:5432, TEST_POSTGRES_URL, or else
# a throwaway one, stopped when the run ends.
if [ -z "${TEST_POSTGRES_URL:-}" ] \
    && ! python3 -c 'import socket; socket.create_connection(("127.0.0.1", 5432), 2)' 2>/dev/null; then
    echo "==> PostgreSQL does not answer on 127.0.0.1:5432: starting a throwaway one" >&2
    read -r TEST_POSTGRES_URL throwaway < <(scripts/throwaway-postgres.sh start)
    export TEST_POSTGRES_URL
    trap 'scripts/throwaway-postgres.sh stop "$throwaway"' EXIT
fi
echo "==> pytest" >&2
# pytest exits 5 when it collects no test: that is a failure here too.
.venv/bin/python -m pytest "$@"
