"""Starts, watches and stops the local vLLM engines.

Each engine is its own process group (vLLM forks an engine core and workers), so stopping an
engine reaches all of it: SIGTERM to the group, a grace period, then SIGKILL. The group is led by
a guard (:mod:`mistral_serve.engines.guard`) that stops it if this process dies, SIGKILL
included. Engine output is relayed line by line with the replica's name. A crash after start, or
a stall the gateway reports (:meth:`Supervisor.restart`), is met with a restart after an
exponentially growing delay; a failure before the first ready is fatal, reported with the
engine's own root-cause line rather than after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from mistral_serve.engines.client import EngineClient
from mistral_serve.engines.guard import guarded
from mistral_serve.errors import EngineError, EngineStartError
from mistral_serve.telemetry.engines import EngineTelemetry

log = logging.getLogger(__name__)
engine_log = logging.getLogger("mistral_serve.engine")

_TAIL_LINES = 400
_EXIT_POLL_S = 0.2
_LINE_LIMIT = 1 << 20  # vLLM prints its whole config on one line
# vLLM's own prefix: "(EngineCore pid=12) ERROR 11-24 20:15:40 [core.py:1510] "
_VLLM_PREFIX = re.compile(
    r"^(\(\w+ pid=\d+\)\s+)?((DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+)?"
    r"(\d\d-\d\d \d\d:\d\d:\d\d\s+)?(\[[^\]]+\]\s+)?"
)
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(: .*)?$")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def line_level(line: str) -> int:
    """The level vLLM gave a line (so LOG_LEVEL filters engine output too); INFO if none."""
    match = _VLLM_PREFIX.match(line)
    level = match.group(3) if match else None
    return logging.getLevelName(level) if level else logging.INFO


def root_cause(lines: Sequence[str]) -> str | None:
    """The first exception line in an engine's output: the cause; later ones only re-raise."""
    for line in lines:
        text = _VLLM_PREFIX.sub("", line.strip(), count=1)
        if _EXCEPTION_LINE.match(text):
            return text
    return None


@dataclass
class EngineSpec:
    """How to start one engine."""

    name: str  # "engine 0"
    command: list[str]
    env: Mapping[str, str]
    url: str  # where it will listen, http://127.0.0.1:PORT


@dataclass
class Backoff:
    """Restart delays: first, first*2, … up to ceiling; reset after a stable run."""

    first_s: float = 1.0
    ceiling_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return min(self.ceiling_s, self.first_s * (2 ** max(0, attempt - 1)))


@dataclass
class EngineProcess:
    """One supervised engine process."""

    spec: EngineSpec
    process: asyncio.subprocess.Process | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    started_at: float = 0.0
    restarts: int = 0
    #: Why the supervisor itself ended this run of the engine (a stall), if it did.
    kill_reason: str | None = None
    _relay: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def last_line(self) -> str:
        return self.tail[-1] if self.tail else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def spawn(self) -> None:
        self.tail.clear()
        self.started_at = time.monotonic()
        self.kill_reason = None
        self.process = await asyncio.create_subprocess_exec(
            *guarded(self.spec.command),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(self.spec.env),
            # Its own process group, so signals reach the engine core and workers too. Not a new
            # session: with the kernel's autogroup scheduling a session is a CPU group, and an
            # engine busy in its own group was seen to stall every other process here (the
            # gateway included) for seconds at a time. (uvloop has no process_group argument.)
            preexec_fn=os.setpgrp,
            limit=_LINE_LIMIT,
        )
        log.info("%s: started (group %d) at %s", self.name, self.process.pid, self.spec.url)
        self._relay = asyncio.create_task(self._relay_output(self.process), name=f"{self.name} log")

    async def _relay_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line past the limit: skip it, keep relaying
                continue
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                engine_log.log(line_level(line), line, extra={"replica": self.name})

    async def wait_exit(self) -> int:
        """Wait for the engine's main process to exit and return its exit code.

        Not ``Process.wait()``: on Python 3.11 it returns only once every pipe is closed, and
        vLLM's engine core can outlive a crashed API server holding stdout open, so the crash
        would never be seen. ``returncode`` is set as soon as the process is reaped.
        """
        process = self.process
        assert process is not None
        while process.returncode is None:  # noqa: ASYNC110 (see above: no event to wait on)
            await asyncio.sleep(_EXIT_POLL_S)
        if self._relay is not None:  # let the last lines (the traceback) through first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._relay), 2)
        return process.returncode

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM the engine's process group, wait, then SIGKILL whatever is left."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.wait_exit(), timeout_s)
            except TimeoutError:
                log.warning("%s: still running %.0f s after SIGTERM; killing", self.name, timeout_s)
        # Children (engine core, workers) may outlive the API server: reap the whole group.
        _signal_group(process.pid, signal.SIGKILL)
        await self.wait_exit()
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class Supervisor:
    """Runs a set of engines: start them all, keep them running, stop them all."""

    def __init__(
        self,
        specs: Sequence[EngineSpec],
        client: EngineClient,
        *,
        start_timeout_s: float,
        stop_timeout_s: float = 30.0,
        backoff: Backoff | None = None,
        progress_every_s: float = 5.0,
        on_progress: Callable[[str], None] | None = None,
        telemetry: EngineTelemetry | None = None,
    ) -> None:
        self.engines = [EngineProcess(spec) for spec in specs]
        self._client = client
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._backoff = backoff or Backoff()
        self._progress_every_s = progress_every_s
        self._on_progress = on_progress or (lambda message: log.info("%s", message))
        self._telemetry = telemetry
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def urls(self) -> list[str]:
        return [engine.spec.url for engine in self.engines]

    @property
    def names(self) -> list[str]:
        return [engine.name for engine in self.engines]

    async def start(self) -> None:
        """Start every engine and wait until all are ready.

        Raises EngineStartError (naming the engine and its root-cause line) as soon as any
        engine exits, or when start_timeout_s passes; the others are stopped first.
        """
        try:
            for engine in self.engines:
                await engine.spawn()
            await asyncio.gather(*(self._wait_ready(engine) for engine in self.engines))
        except BaseException:
            await self.stop()
            raise
        self._watchers = [
            asyncio.create_task(self._keep_running(engine), name=f"watch {engine.name}")
            for engine in self.engines
        ]

    async def _wait_ready(self, engine: EngineProcess) -> None:
        exited = asyncio.create_task(engine.wait_exit())
        deadline = engine.started_at + self._start_timeout_s
        next_report = engine.started_at + self._progress_every_s
        try:
            while True:
                if await self._is_healthy(engine):
                    elapsed = time.monotonic() - engine.started_at
                    self._on_progress(f"{engine.name}: ready after {elapsed:.0f} s")
                    return
                if exited.done():
                    raise _start_failure(engine, exited.result())
                now = time.monotonic()
                if now >= deadline:
                    raise EngineStartError(
                        f"{engine.name} was not ready after {self._start_timeout_s:.0f} s "
                        f"(ENGINE_START_TIMEOUT_S); last line: {engine.last_line}"
                    )
                if now >= next_report:
                    next_report = now + self._progress_every_s
                    self._on_progress(
                        f"{engine.name}: loading… {now - engine.started_at:.0f} s"
                        f" | {_shorten(engine.last_line)}"
                    )
                await asyncio.wait({exited}, timeout=0.5)
        finally:
            if not exited.done():
                exited.cancel()

    async def _is_healthy(self, engine: EngineProcess) -> bool:
        try:
            await self._client.get_json(engine.spec.url + "/health", timeout_s=2.0)
        except EngineError:
            return False
        return True

    def restart(self, name: str, reason: str) -> bool:
        """Kill the engine named ``name`` (its whole group: a stalled engine cannot be asked to
        stop) so that it restarts with the usual backoff. False if there is no such running
        engine or the supervisor is stopping."""
        engine = next((e for e in self.engines if e.name == name), None)
        if engine is None or self._stopping or not engine.running or not self._watchers:
            return False
        assert engine.process is not None
        log.warning("%s: %s; killing it to restart it", name, reason)
        engine.kill_reason = "stalled"
        _signal_group(engine.process.pid, signal.SIGKILL)
        return True

    async def _keep_running(self, engine: EngineProcess) -> None:
        """Restart ``engine`` whenever it exits, waiting longer after each quick failure."""
        attempt = 0
        while not self._stopping:
            code = await engine.wait_exit()
            if self._stopping:
                return
            ran_for = time.monotonic() - engine.started_at
            attempt = 1 if ran_for >= self._backoff.stable_s else attempt + 1
            delay = self._backoff.delay(attempt)
            reason = engine.kill_reason or "exited"
            if engine.kill_reason:  # expected: the warning was given when it was killed
                level, cause = logging.WARNING, f"killed by the supervisor: {engine.kill_reason}"
            else:
                level, cause = logging.ERROR, root_cause(engine.tail) or engine.last_line
            log.log(
                level,
                "%s exited with code %s after %.0f s (%s); restarting in %.0f s",
                engine.name,
                code,
                ran_for,
                cause,
                delay,
            )
            await engine.stop(self._stop_timeout_s)  # reap any orphaned children first
            await asyncio.sleep(delay)
            if self._stopping:
                return
            engine.restarts += 1
            if self._telemetry is not None:
                self._telemetry.restarted(engine.name, reason)
            await engine.spawn()

    async def stop(self) -> None:
        """Stop watching, then stop every engine (in parallel: each has its own grace period)."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        for watcher in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._watchers = []
        await asyncio.gather(*(engine.stop(self._stop_timeout_s) for engine in self.engines))


def _start_failure(engine: EngineProcess, code: int) -> EngineStartError:
    cause = root_cause(engine.tail) or engine.last_line or "no output"
    return EngineStartError(f"{engine.name} exited with code {code} before it was ready: {cause}")


def _shorten(line: str, limit: int = 160) -> str:
    line = _VLLM_PREFIX.sub("", line.strip(), count=1)
    return line if len(line) <= limit else line[: limit - 1] + "…"
