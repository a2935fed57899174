"""Several gateway processes on one port (GATEWAY_WORKERS): one Python process proxies about one
core's worth of streams, and a GPU box streams more than that.

The process that was started (``up`` or ``gateway``) binds the port and starts the workers,
each a whole gateway (``mistral-serve worker``) serving the same listening socket, which it
inherits: the kernel hands each new connection to one of them. What they must agree on, they
share, the way gateway replicas on several machines do, only closer:

- **The engines' concurrency targets** hold exactly across workers: in-flight requests per
  engine are counted in a table in shared memory, and an engine is chosen and leased under a
  lock (:mod:`mistral_serve.engines.shared_load`). A worker whose requests wait for room
  another worker holds looks at the table every few milliseconds while they wait.
- **Routing**: every worker computes the same home engine for a conversation (rendezvous of
  its opening), as replicas do; each learns its own prefix index from its own choices, and
  the home keeps a conversation's turns together whichever worker takes them.
- **Per-key limits** must be counted in one place: with more than one worker they are counted
  in Redis (REDIS_URL), which the settings require unless AUTH=off.
- **The ledger**: every worker writes its rows to the same store (each with its own spool).
- **Telemetry**: each worker is one ``service.instance.id`` of the service (its spans and
  counters add up); the engines' states, memory and the ready-engine count are exported by
  worker 0 alone, so that a sum over instances counts each engine once.
- **Engine restarts** (under ``up``): a worker that finds an engine stalled asks the process
  that started the engines, over a pipe, to restart it.

Workers die with the process that started them, SIGKILL included (the parent-death signal),
and one that dies on its own is started again after a second. On SIGTERM each worker drains
as a single gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mistral_serve.config import Settings
from mistral_serve.engines.shared_load import SharedLoad, clear_row, create_table
from mistral_serve.errors import ConfigError

log = logging.getLogger(__name__)

#: A worker that exits on its own is started again after this long.
RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerRole:
    """Which worker this process is, and the table it shares with the others (the descriptor
    it inherited: opened again through /proc, so that its lock is this worker's own)."""

    index: int
    count: int
    load_table_fd: int

    def shared_load(self) -> SharedLoad:
        return SharedLoad(_through(self.load_table_fd), self.count, self.index)

    @property
    def exports_engines(self) -> bool:
        """Whether this worker exports the engines' own telemetry (one of them does)."""
        return self.index == 0


def worker_count(settings: Settings, gpus: int, cpus: int | None) -> int:
    """GATEWAY_WORKERS, or for ``auto``: one on a machine without GPUs (the CPU engines need
    the cores more than the gateway), else one per 16 cores, two to four, as one worker proxies
    about one core's worth of streams and a 2×H100 box at its peak needs about two; one when
    per-key limits could not be shared (AUTH on and no REDIS_URL)."""
    if settings.gateway_workers != "auto":
        return settings.gateway_workers
    if gpus == 0 or (settings.auth != "off" and settings.redis_url is None):
        return 1
    return max(2, min(4, (cpus or 1) // 16))


def check_workers(settings: Settings, count: int) -> None:
    """Refuse workers that could not keep per-key limits exact."""
    if count > 1 and settings.auth != "off" and settings.redis_url is None:
        raise ConfigError(
            f"GATEWAY_WORKERS={count}: per-key limits must be counted in one place for several "
            "workers; set REDIS_URL, or AUTH=off, or GATEWAY_WORKERS=1"
        )


def listening_socket(host: str, port: int) -> socket.socket:
    """The gateway's port, bound as the command starts (so that a taken port is refused at
    once, and nothing takes it while engines load) and served by uvicorn or every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"PORT: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock


class Workers:
    """The worker processes of one gateway: started, watched, restarted, stopped."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        listening: socket.socket,
        *,
        engines: Mapping[str, str] | None = None,
        restarter: Callable[[str, str], bool] | None = None,
        environ: Mapping[str, str],
    ) -> None:
        self._settings = settings
        self._count = count
        self._engines = engines  # engine URL -> name (under `up`); None: ENGINE_URLS
        self._restarter = restarter
        self._environ = dict(environ)
        self._table_fd: int | None = None
        self._socket = listening
        self._processes: list[asyncio.subprocess.Process | None] = [None] * count
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def _table(self) -> Path:
        """The load table, reached through this process's descriptor of it (it has no name)."""
        assert self._table_fd is not None
        return _through(self._table_fd)

    async def start(self) -> None:
        self._socket.set_inheritable(True)
        # The table is made in memory (/dev/shm), opened, and its name removed at once: the
        # workers reach it through the descriptor they inherit, and nothing is left behind
        # whatever ends this process.
        with tempfile.NamedTemporaryFile(prefix="mistral-serve-load-", dir=_shm()) as named:
            create_table(Path(named.name), self._count)
            self._table_fd = os.open(named.name, os.O_RDWR)
        os.set_inheritable(self._table_fd, True)
        for index in range(self._count):
            self._watchers.append(asyncio.create_task(self._keep_running(index)))

    async def wait(self) -> None:
        """Until every worker is gone for good (after :meth:`stop`)."""
        await asyncio.gather(*self._watchers, return_exceptions=True)

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM every worker (each drains), SIGKILL what is left after ``timeout_s``."""
        self._stopping = True
        running = [p for p in self._processes if p is not None and p.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(process.wait() for process in running))
        for process in running:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        await self.wait()
        self._socket.close()
        if self._table_fd is not None:
            os.close(self._table_fd)

    async def _keep_running(self, index: int) -> None:
        while not self._stopping:
            process, control = await self._spawn(index)
            self._processes[index] = process
            relaying = asyncio.create_task(self._relay_requests(index, control))
            code = await process.wait()
            relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relaying
            if self._stopping:
                return
            log.error("gateway worker %d exited (%s); starting it again", index, code)
            clear_row(self._table, self._count, index)  # its requests died with it
            await asyncio.sleep(RESTART_DELAY_S)

    async def _spawn(self, index: int) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader]:
        assert self._socket is not None
        read_end, write_end = os.pipe()
        command = [sys.executable, "-m", "mistral_serve.cli", "worker"]
        command += ["--index", str(index), "--workers", str(self._count)]
        command += ["--listen-fd", str(self._socket.fileno()), "--control-fd", str(write_end)]
        command += ["--load-table-fd", str(self._table_fd), "--parent", str(os.getpid())]
        for url, name in (self._engines or {}).items():
            command += ["--engine", f"{name}={url}"]
        process = await asyncio.create_subprocess_exec(
            *command,
            env=self._worker_environ(index),
            pass_fds=(self._socket.fileno(), write_end, self._table_fd),
        )
        os.close(write_end)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb", 0)
        )
        return process, reader

    def _worker_environ(self, index: int) -> dict[str, str]:
        env = dict(self._environ)
        instance = f"{socket.gethostname()}-worker-{index}"
        extra = f"service.instance.id={instance},mistral_serve.gateway.worker={index}"
        given = env.get("OTEL_RESOURCE_ATTRIBUTES", "")
        env["OTEL_RESOURCE_ATTRIBUTES"] = f"{given},{extra}" if given else extra
        return env

    async def _relay_requests(self, index: int, control: asyncio.StreamReader) -> None:
        """A worker's requests to this process: ``restart<TAB>engine<TAB>reason`` lines."""
        while line := await control.readline():
            verb, _, rest = line.decode("utf-8", "replace").rstrip("\n").partition("\t")
            name, _, reason = rest.partition("\t")
            if verb == "restart" and self._restarter is not None:
                self._restarter(name, f"{reason} (worker {index})")


def restart_requester(control_fd: int) -> Callable[[str, str], bool]:
    """A worker's restarter: the request goes to the process that started the engines."""
    pipe = os.fdopen(control_fd, "wb", buffering=0)

    def request(name: str, reason: str) -> bool:
        line = f"restart\t{name}\t{reason}".replace("\n", " ") + "\n"
        try:
            pipe.write(line.encode())
        except OSError:
            return False
        return True

    return request


def die_with(parent: int) -> None:
    """Be killed when ``parent`` dies (Linux), however it dies; leave at once if it already
    has (it died before the request was made)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def engines_given(pairs: Sequence[str]) -> dict[str, str]:
    """``--engine NAME=URL`` arguments as URL -> name."""
    engines = {}
    for pair in pairs:
        name, _, url = pair.rpartition("=")
        engines[url] = name
    return engines


def _through(fd: int) -> Path:
    """The file open as ``fd`` in this process, as a path: the load table has no name, and
    opening it again this way gives this process a lock of its own on it."""
    return Path(f"/proc/self/fd/{fd}")


def _shm() -> str | None:
    """Memory-backed /dev/shm for the load table where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
