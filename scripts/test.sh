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
# The store and limit tests need PostgreSQL and Redis: this machine's on their standard ports,
# TEST_POSTGRES_URL / TEST_REDIS_URL, or else throwaway ones, stopped when the run ends.
answers() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 2)" 2>/dev/null; }
throwaways=()
trap 'for stop in "${throwaways[@]}"; do eval "$stop"; done' EXIT
if [ -z "${TEST_POSTGRES_URL:-}" ] && ! answers 5432; then
    echo "==> PostgreSQL does not answer on 127.0.0.1:5432: starting a throwaway one" >&2
    read -r TEST_POSTGRES_URL postgres_folder < <(scripts/throwaway-postgres.sh start)
    export TEST_POSTGRES_URL
    throwaways+=('scripts/throwaway-postgres.sh stop "$postgres_folder"')
fi
if [ -z "${TEST_REDIS_URL:-}" ] && ! answers 6379; then
    echo "==> Redis does not answer on 127.0.0.1:6379: starting a throwaway one" >&2
    read -r TEST_REDIS_URL redis_folder < <(scripts/throwaway-redis.sh start)
    export TEST_REDIS_URL
    throwaways+=('scripts/throwaway-redis.sh stop "$redis_folder"')
fi
echo "==> pytest" >&2
# pytest exits 5 when it collects no test: that is a failure here too.
.venv/bin/python -m pytest "$@"
