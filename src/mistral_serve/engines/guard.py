"""Engines die with whoever started them, even when it is SIGKILLed.

    python -m mistral_serve.engines.guard PARENT_PID -- COMMAND...

The supervisor starts each engine through this guard, which leads the engine's process group.
Linux sends it a signal when its parent dies (``PR_SET_PDEATHSIG``), for any reason, SIGKILL and
the OOM killer included; the guard then stops the whole group: SIGTERM, a short grace, SIGKILL.
The parent-death signal alone would not do: it reaches only the process that asked for it, and
vLLM's engine core and workers are that process's children and grandchildren.

Nothing else changes: the supervisor still signals the group (the guard ignores SIGTERM and
SIGINT and lets the engine handle them), and the guard exits with the engine's exit code as soon
as the engine exits. Stdlib only; it costs one small idle process per engine.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

#: Sent to the guard when its parent dies. Not SIGTERM: the supervisor sends that to the whole
#: group to stop an engine gracefully, and the guard must tell the two apart.
PARENT_DIED = signal.SIGUSR1
_PR_SET_PDEATHSIG = 1
_MODULE = "mistral_serve.engines.guard"  # not __name__, which is "__main__" when run
#: After the parent died: how long the engine gets to exit after SIGTERM before SIGKILL.
GRACE_S = 5.0


def guarded(command: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """``command`` run under the guard, tied to ``parent_pid`` (default: this process)."""
    parent = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-m", _MODULE, str(parent), "--", *command]


def _ask_for_parent_death_signal() -> bool:
    """Linux only; elsewhere the guard is a plain pass-through."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_DIED), 0, 0, 0) == 0


class _ParentDied(Exception):
    """Raised by the parent-death signal's handler, so it interrupts the wait for the engine."""


def _on_parent_death(signum: int, frame: object) -> None:
    raise _ParentDied


def _stop_group(engine: subprocess.Popen[bytes] | None) -> None:
    signal.signal(PARENT_DIED, signal.SIG_IGN)
    group = os.getpgrp()
    os.killpg(group, signal.SIGTERM)  # the guard ignores it; the engine shuts down cleanly
    deadline = time.monotonic() + GRACE_S
    while engine is not None and engine.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)  # the engine's children too; the guard goes last


def _default_signals() -> None:
    """In the engine, before it starts: the signals the guard ignores are the engine's again."""
    for signum in (signal.SIGTERM, signal.SIGINT, PARENT_DIED):
        signal.signal(signum, signal.SIG_DFL)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(
            "usage: python -m mistral_serve.engines.guard PARENT_PID -- COMMAND...", file=sys.stderr
        )
        return 2
    parent, command = int(argv[0]), list(argv[2:])
    if os.getpgrp() != os.getpid():
        os.setpgrp()  # lead a group of our own, so stopping it reaches every descendant
    for signum in (signal.SIGTERM, signal.SIGINT):  # meant for the engine, which gets them too
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(PARENT_DIED, _on_parent_death)
    told = _ask_for_parent_death_signal()
    engine: subprocess.Popen[bytes] | None = None
    try:
        # The parent may have died before the request above: then we are someone else's child.
        if os.getppid() != parent:
            raise _ParentDied
        engine = subprocess.Popen(command, preexec_fn=_default_signals)
        while True:
            try:
                code = engine.wait(timeout=None if told else 0.5)
            except subprocess.TimeoutExpired:  # no parent-death signal here: look ourselves
                if os.getppid() != parent:
                    raise _ParentDied from None
                continue
            return code if code >= 0 else 128 - code
    except _ParentDied:
        _stop_group(engine)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
