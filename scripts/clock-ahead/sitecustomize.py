"""Moves this Python process's wall clock MISTRAL_SERVE_TEST_CLOCK_AHEAD_DAYS ahead (see
scripts/test-clock-ahead.sh): time.time, datetime.now and the like, never the monotonic clock.
Python runs a sitecustomize module at start-up from sys.path, so every Python process the
suite starts (gateways, engines, the CLI) runs ahead by the same span."""

import datetime
import os

import time_machine

_DAYS = float(os.environ.get("MISTRAL_SERVE_TEST_CLOCK_AHEAD_DAYS", "0"))
if _DAYS:
    _ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=_DAYS)
    time_machine.travel(_ahead, tick=True).start()
