"""Gateway cost of telemetry: the same load through two gateways over one engine, telemetry
on (exporting over OTLP/HTTP to a local sink) and off, measured in one run, rounds alternating.

    .venv/bin/python bench/telemetry_overhead.py [--requests 200] [--concurrency 16] [--rounds 3]

Reports requests/s and the gateway process's CPU time per request (user + system, from
/proc): on a shared 2-core machine the engine dominates wall time, so CPU per request is the
figure that isolates the gateway. Not a test: numbers go to docs/observability.md with the
command that produced them.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
from harness import cpu_time, demo_engine_spec, start_engine, start_gateway, stop_all, wait_ok


def otlp_sink() -> tuple[str, int]:
    """An OTLP/HTTP endpoint that accepts and discards; returns (endpoint, request count)."""
    received = [0]

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", 0)))
            received[0] += 1
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", received


async def load(url: str, requests: int, concurrency: int) -> float:
    """Streamed chat completions; returns the wall time."""
    body = {
        "model": "demo",
        "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
        "max_tokens": 32,
        "ignore_eos": True,
        "stream": True,
    }
    queue = iter(range(requests))

    async def worker(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            async with session.post(url + "/v1/chat/completions", json=body) as response:
                assert response.status == 200, await response.text()
                async for _chunk in response.content.iter_any():
                    pass

    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mistral-serve-bench-"))
    spec = demo_engine_spec(work)
    sink, exports = otlp_sink()
    processes = [start_engine(spec, work / "engine.log")]
    try:
        wait_ok(spec.url + "/health")
        gateways: dict[str, tuple[str, subprocess.Popen]] = {}
        for name, extra in (
            ("off", {}),
            ("on", {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_METRIC_EXPORT_INTERVAL": "5000"}),
        ):
            url, process = start_gateway(work, [spec.url], name, **extra)
            processes.append(process)
            gateways[name] = (url, process)
        for url, _ in gateways.values():
            wait_ok(url + "/ready", 60)
            asyncio.run(load(url, 20, 4))  # warm up connections and the engine

        results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
        for round_index in range(args.rounds):
            order = ("off", "on") if round_index % 2 == 0 else ("on", "off")
            for name in order:
                url, process = gateways[name]
                cpu_before = cpu_time(process.pid)
                wall = asyncio.run(load(url, args.requests, args.concurrency))
                cpu = cpu_time(process.pid) - cpu_before
                results[name].append((args.requests / wall, cpu / args.requests * 1e6))
                print(
                    f"round {round_index + 1} telemetry {name:>3}: {args.requests / wall:6.1f} "
                    f"req/s, gateway CPU {cpu / args.requests * 1e6:6.0f} µs/request",
                    flush=True,
                )

        def mean(values: list[float]) -> float:
            return sum(values) / len(values)

        rps = {name: mean([r for r, _ in rows]) for name, rows in results.items()}
        cpu = {name: mean([c for _, c in rows]) for name, rows in results.items()}
        print()
        print("| telemetry | requests/s | gateway CPU per request |")
        print("|---|---|---|")
        for name in ("off", "on"):
            print(f"| {name} | {rps[name]:.1f} | {cpu[name]:.0f} µs |")
        print()
        print(f"throughput on/off: {rps['on'] / rps['off']:.3f}")
        print(f"gateway CPU per request on/off: {cpu['on'] / cpu['off']:.2f}")
        print(f"OTLP export requests received by the sink: {exports[0]}")
    finally:
        stop_all(processes)


if __name__ == "__main__":
    main()
