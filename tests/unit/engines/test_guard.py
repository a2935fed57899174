"""The engine guard: an engine's whole process group dies with the process that started it, even
when that process is SIGKILLed; otherwise the guard is invisible (exit codes, SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import psutil

from mistral_serve.engines.guard import GRACE_S, guarded
from tests.support import alive, wait_for

# An "engine" with a child, as vLLM's API server has its engine core.
ENGINE = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"  # noqa: E501

# A "supervisor" that starts the guarded engine in its own group, reports the group, and waits.
PARENT = textwrap.dedent(
    f"""
    import os, subprocess, sys
    from mistral_serve.engines.guard import guarded
    engine = subprocess.Popen(guarded([sys.executable, "-c", {ENGINE!r}]), process_group=0)
    print(engine.pid, flush=True)
    engine.wait()
    """
)


def group_members(pgid: int) -> set[psutil.Process]:
    return {p for p in psutil.process_iter() if _pgid(p.pid) == pgid}


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_a_sigkilled_parent_takes_the_whole_engine_group_with_it():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    try:
        guard = int(parent.stdout.readline())
        # guard, engine, the engine's child
        wait_for(lambda: len(group_members(guard)) >= 3, 30, "the engine started")
        members = group_members(guard)
        parent.kill()  # SIGKILL: no handler of the parent's runs
        parent.wait()
        wait_for(lambda: not alive(members), GRACE_S + 5, "the whole group gone")
    finally:
        if parent.poll() is None:
            parent.kill()


def test_the_engines_exit_code_passes_through():
    code = "import sys; sys.exit(7)"
    assert subprocess.run(guarded([sys.executable, "-c", code]), timeout=30).returncode == 7


def test_sigterm_to_the_group_is_the_engines_to_handle():
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    engine = subprocess.Popen(
        guarded([sys.executable, "-c", code]), process_group=0, stdout=subprocess.PIPE
    )
    assert engine.stdout.readline().strip() == b"ready"
    os.killpg(engine.pid, signal.SIGTERM)
    assert engine.wait(timeout=30) == 42  # the guard waited for the engine, then said its code
