#!/usr/bin/env bash
# Runs the whole suite (scripts/test.sh) with the wall clock of every Python process it starts
# DAYS ahead (default 365): no test may depend on today's date (docs/testing.md, "Time").
#   scripts/test-clock-ahead.sh [DAYS] [pytest arguments]
# Debian's faketime cannot do this for Python 3.11 (libfaketime 0.9.10, tried here): with its
# monotonic clock faked, threading waits never return; with it left alone, time.sleep fails
# with EINVAL. time-machine (the test extra) moves the wall clock only, from a sitecustomize
# module that every Python process loads at start. PostgreSQL and Redis keep the real time.
set -euo pipefail
cd "$(dirname "$0")/.."
days=365
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then
    days=$1
    shift
fi
export MISTRAL_SERVE_TEST_CLOCK_AHEAD_DAYS="$days"
export PYTHONPATH="$PWD/scripts/clock-ahead${PYTHONPATH:+:$PYTHONPATH}"
echo "==> the wall clock of every Python process is $days days ahead" >&2
exec ./scripts/test.sh "$@"
