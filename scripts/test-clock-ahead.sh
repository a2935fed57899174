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
./scripts/install.sh test  # time-machine, before any process loads the sitecustomize
export MISTRAL_SERVE_TEST_CLOCK_AHEAD_DAYS="$days"
export PYTHONPATH="$PWD/scripts/clock-ahead${PYTHONPATH:+:$PYTHONPATH}"
# A sitecustomize that fails only prints a line: make sure the clock really moved (`date` is
# no Python process: it tells the real time).
moved=$(( $(.venv/bin/python -c 'import time; print(int(time.time()))') - $(date +%s) ))
if (( moved < days * 86400 - 60 || moved > days * 86400 + 60 )); then
    echo "the wall clock of Python processes moved ${moved} s, not ${days} days" >&2
    exit 1
fi
echo "==> the wall clock of every Python process is $days days ahead" >&2
# time-machine's pytest plugin (unused) is imported before pytest can rewrite it: not news.
exec ./scripts/test.sh -W "ignore:Module already imported:pytest.PytestAssertRewriteWarning" "$@"
