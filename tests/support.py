"""What tests that drive real processes share, in one place: starting a process with its output
in a log, stopping it with every process it started, polling until something holds (threads
and event loops alike), waiting for a server to answer, reading an engine's counters, and
reading the rows a real store's ledger holds (the gateway itself never reads them back)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
from sqlalchemy import select

from mistral_serve.engines.stats import EngineStats, parse_stats
from mistral_serve.store import Store, UsageRow
from mistral_serve.store.models import UsageEntry, utc


# -- processes ------------------------------------------------------------------------------------
def start_process(command: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """``command`` as the leader of a new process group, its output in ``log_path``."""
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            command,
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            process_group=0,  # not a new session: see engines/supervisor.py
        )


def family(pid: int) -> set[psutil.Process]:
    """The process ``pid`` and everything below it now (none when it is gone)."""
    try:
        root = psutil.Process(pid)
        return {root, *root.children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


def alive(processes: set[psutil.Process]) -> set[psutil.Process]:
    """Those of ``processes`` still running (a zombie has finished: it is its parent's to reap)."""
    running = set()
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.add(process)
    return running


def stop_process(process: subprocess.Popen, timeout_s: float = 30) -> None:
    """Stop ``process`` and every process below it: SIGTERM to its group (a gateway drains, an
    engine's guard stops the engine's own group), up to ``timeout_s`` for it to exit, then
    SIGKILL to each descendant ever seen, whatever group it leads (engines lead their own), and
    to the group. Descendants are looked up before and after the wait: once the root exits,
    its orphans can no longer be found from it."""
    seen = family(process.pid)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout_s)
        seen |= family(process.pid)
    for leftover in alive(seen):
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_for(lambda: not alive(seen), 10, f"everything under {process.args[:3]} gone")


def vllm_process(root: int, marker: str) -> psutil.Process:
    """The descendant of ``root`` whose command line holds ``marker``."""
    for process in psutil.Process(root).children(recursive=True):
        if marker in " ".join(process.cmdline()):
            return process
    raise LookupError(f"no process with {marker!r} under {root}")


# -- waiting -------------------------------------------------------------------------------------
def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until it is true; returns when it became true (monotonic). Fails the
    test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)
    return time.monotonic()


def seconds_until(condition: Callable[[], object], timeout_s: float, what: str) -> float:
    """How long :func:`wait_for` waited for ``condition``."""
    started = time.monotonic()
    return wait_for(condition, timeout_s, what) - started


async def until(condition: Callable[[], object], timeout_s: float = 5.0, what: str = "") -> None:
    """:func:`wait_for` on an event loop (the loop runs between polls); ``condition`` may be a
    coroutine function (an HTTP poll)."""
    deadline = time.monotonic() + timeout_s
    while True:
        met = condition()
        if inspect.isawaitable(met):
            met = await met
        if met:
            return
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what or condition}"
        await asyncio.sleep(0.01)


def wait_until_ok(url: str, process: subprocess.Popen, log_path: Path, timeout_s: float) -> None:
    """Until ``url`` answers 200; fails at once, with the log's tail, if ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    # One client for the whole wait: each bare httpx.get builds an SSL context, which costs
    # the CPU the engines being waited for need.
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{process.args[:4]} exited with {process.returncode}:\n{tail}")
            try:
                if http.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"{url} not OK after {timeout_s} s; see {log_path}")


# -- engines' own counters -----------------------------------------------------------------------
def engine_stats(url: str, http: httpx.Client | None = None) -> EngineStats:
    """An engine's /metrics as the gateway reads them (counters, load)."""
    return parse_stats((http or httpx).get(url + "/metrics", timeout=30).text)


# -- what a store's ledger holds ------------------------------------------------------------------
async def ledger_rows(store: Store) -> list[UsageRow]:
    """Every row of the usage ledger, oldest first."""
    query = select(UsageEntry).order_by(UsageEntry.created_at, UsageEntry.id)
    async with store.sessions() as session:
        entries = list(await session.scalars(query))
    fields = UsageRow.__dataclass_fields__
    return [
        UsageRow(
            **{name: getattr(entry, name) for name in fields}
            | {"created_at": utc(entry.created_at)}
        )
        for entry in entries
    ]


# -- faults ---------------------------------------------------------------------------------------
@contextmanager
def paused(process: psutil.Process, after_s: float = 0.0, for_s: float | None = None) -> Iterator:
    """``kill -STOP`` ``process`` (after ``after_s``, from a thread, for ``for_s`` seconds or
    until the block ends); it is always resumed."""
    resumed = threading.Event()

    def pause() -> None:
        time.sleep(after_s)
        process.suspend()
        resumed.wait(for_s)
        process.resume()

    thread = threading.Thread(target=pause, daemon=True)
    thread.start()
    try:
        yield
    finally:
        resumed.set()
        thread.join()
        process.resume()
