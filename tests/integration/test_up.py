"""`mistral-serve up` as a user runs it: engines and gateway from one command, two gateway
workers that agree on routing and on the engines' concurrency targets, a stuck engine
restarted at a worker's request, and nothing left behind after SIGTERM or even SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import yaml
from mistralai.client import Mistral

from mistral_serve.engines.stats import parse_stats
from mistral_serve.engines.supervisor import free_port
from mistral_serve.engines.vllm_args import VLLM_SERVER_MODULE
from tests.support import (
    alive,
    family,
    start_process,
    stop_process,
    vllm_process,
    wait_for,
    wait_until_ok,
)

from .conftest import ENGINE_START_TIMEOUT_S, created_key, mistral_serve, start_gateway
from .test_routing import assert_conversations_kept_their_engine, burst, converse

pytestmark = pytest.mark.integration

DEMO_FLEET = Path(__file__).parents[2] / "config" / "models.demo.yaml"


def run_up(env_overrides: dict[str, str], cache_dir, log_path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(
        os.environ,
        HOST="127.0.0.1",
        PORT=str(port),
        MISTRAL_SERVE_CACHE_DIR=str(cache_dir),
        MISTRAL_SERVE_DATA_DIR=str(log_path.parent / "data"),
        VLLM_CPU_KVCACHE_SPACE="1",
        **env_overrides,
    )
    return start_process([sys.executable, "-m", "mistral_serve.cli", "up"], env, log_path), port


def finish(process: subprocess.Popen, log_path, timeout_s: float) -> str:
    """Wait for ``process`` to exit; its whole output."""
    process.wait(timeout=timeout_s)
    return log_path.read_text(errors="replace")


def greedy_with(client: openai.OpenAI, model: str) -> str:
    answer = client.completions.create(
        model=model, prompt="The harbour at dawn", max_tokens=8, temperature=0
    )
    return answer.choices[0].text


def test_up_serves_the_demo_fleet_then_stops_everything_on_sigterm(demo_cache, tmp_path):
    """`up` from config/models.demo.yaml: a chat model, its LoRA adapters and an embedding
    model from one port, each to its own endpoint; SIGTERM stops every engine. Its chat engine
    holds one adapter at a time here (max_loras: 1), so the two adapters take turns on it:
    each request for the one not held loads it and evicts the other."""
    log_path = tmp_path / "up.log"
    fleet = yaml.safe_load(DEMO_FLEET.read_text())
    fleet["models"][0]["max_loras"] = 1
    models_file = tmp_path / "models.yaml"
    models_file.write_text(yaml.safe_dump(fleet))
    settings = {"MODELS_FILE": str(models_file), "ADMIN_API_KEY": ADMIN_KEY}
    process, port = run_up(settings, demo_cache, log_path)
    url = f"http://127.0.0.1:{port}"
    second = None
    try:
        wait_until_ok(url + "/ready", process, log_path, ENGINE_START_TIMEOUT_S)
        wait_for(
            lambda: all(
                e["ready"] for e in httpx.get(url + "/ready", timeout=10).json()["engines"]
            ),
            ENGINE_START_TIMEOUT_S,
            "both engines of the fleet ready",
        )

        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
        reply = client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content  # an alias reaches its model

        def greedy(model: str) -> str:
            return greedy_with(client, model)

        assert greedy("demo-lora") != greedy("demo")  # the adapter changes the model
        assert greedy("demo-lora") == greedy("demo-lora")
        with Mistral(api_key="unused", server_url=url) as mistral:
            vectors = mistral.embeddings.create(model="demo-embed", inputs=["a", "b"]).data
        assert len(vectors) == 2 and len(vectors[0].embedding) == 64
        cards = {card.id: card for card in client.models.list().data}
        assert {"demo", "demo-chat", "demo-lora", "demo-embed"} <= set(cards)
        assert not cards["demo-embed"].model_extra["capabilities"]["completion_chat"]
        assert cards["demo"].model_extra["capabilities"]["completion_chat"]
        lora = cards["demo-lora"].model_extra
        assert lora["parent"] == "demo" and cards["demo-lora"].root == "demo"
        assert lora["capabilities"] == cards["demo"].model_extra["capabilities"]
        assert lora["max_context_length"] == cards["demo"].model_extra["max_context_length"]

        # A key allowed only the adapter may use it, and not its base (AUTH=auto: keys are
        # required once one exists)
        data = {"MISTRAL_SERVE_DATA_DIR": str(log_path.parent / "data")}
        _, key = created_key(
            mistral_serve(data, "keys", "create", "--name", "lora-only", "--models", "demo-lora")
        )
        keyed = openai.OpenAI(base_url=url + "/v1", api_key=key)
        wait_for(lambda: keyed.models.list().data and len(keyed.models.list().data) == 1, 30,
                 "the key's allow-list in force")  # fmt: skip
        assert [card.id for card in keyed.models.list().data] == ["demo-lora"]
        assert greedy_with(keyed, "demo-lora")
        with pytest.raises(openai.PermissionDeniedError):
            greedy_with(keyed, "demo")

        # An adapter added at run time serves on its base's engine, comes back after a kill -9
        # of that engine, and a second gateway over the same store sees it
        _, any_model = created_key(mistral_serve(data, "keys", "create", "--name", "all"))
        everyone = openai.OpenAI(base_url=url + "/v1", api_key=any_model)
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        body = {"name": "demo-lora-2", "base": "demo", "path": str(demo_cache / "demo-lora")}
        added = httpx.post(url + "/admin/adapters", json=body, headers=admin, timeout=60)
        assert added.status_code == 201, added.text
        assert added.json()["engines"] == ["demo 0"]
        wait_for(lambda: any_model_works(everyone, "demo-lora-2"), 30, "the new adapter serves")
        # the same weights as the built-in adapter: the same greedy text, each loaded in turn
        # into the engine's one slot
        assert greedy_with(everyone, "demo-lora-2") == greedy_with(everyone, "demo-lora")
        with httpx.Client(base_url=url, timeout=10) as http:
            held = engine_states(http)["demo 0"]
        assert held["adapter_slots"] == 1 and held["adapters"] == ["demo-lora"]
        assert greedy_with(everyone, "demo-lora-2") != greedy_with(everyone, "demo")
        with httpx.Client(base_url=url, timeout=10) as http:
            assert engine_states(http)["demo 0"]["adapters"] == ["demo-lora-2"]
        demo_engine = vllm_process(process.pid, "--served-model-name demo demo-chat")
        demo_engine.kill()
        wait_for(lambda: not any_model_works(everyone, "demo-lora-2"), 60, "the engine gone")
        wait_for(lambda: any_model_works(everyone, "demo-lora-2"), ENGINE_START_TIMEOUT_S,
                 "the adapter back on the restarted engine")  # fmt: skip
        with httpx.Client(base_url=url, timeout=10) as http:
            engine_url = engine_states(http)["demo 0"]["url"]
        second_url, second = start_gateway(
            engine_url, "", tmp_path / "second.log", ADMIN_API_KEY=ADMIN_KEY, **data
        )
        listed = httpx.get(second_url + "/admin/adapters", headers=admin, timeout=10).json()
        assert [adapter["name"] for adapter in listed["data"]] == ["demo-lora-2"]

        started = family(process.pid) - {psutil.Process(process.pid)}
        assert started, "up should have started engine processes"
        process.send_signal(signal.SIGTERM)
        output = finish(process, log_path, 180)
        assert process.returncode == 0, output
        assert "demo 0: ready after" in output and "demo-embed 0: ready after" in output
        assert "[demo-embed 0]" in output  # engine logs were relayed with the engine's name
        time.sleep(0.5)
        assert not alive(started), f"still running after up exited: {alive(started)}"
    finally:
        if second is not None:
            stop_process(second)
        stop_process(process)


ADMIN_KEY = "admin-s3cret"


def any_model_works(client: openai.OpenAI, model: str) -> bool:
    try:
        return bool(greedy_with(client, model))
    except openai.APIError:
        return False


def test_up_reports_the_engines_own_error_when_it_cannot_start(demo_cache, tmp_path):
    missing = tmp_path / "no-such-model"
    started = time.monotonic()
    log_path = tmp_path / "up.log"
    process, _ = run_up({"MODEL_ID": str(missing)}, demo_cache, log_path)
    output = finish(process, log_path, ENGINE_START_TIMEOUT_S)
    assert process.returncode == 3, output
    last_line = output.strip().splitlines()[-1]
    assert last_line.startswith("mistral-serve: engine failed to start: engine 0 exited")
    assert str(missing) in last_line  # vLLM's own complaint about the path, not a timeout
    assert time.monotonic() - started < 120


def engine_states(http: httpx.Client) -> dict[str, dict]:
    return {engine["name"]: engine for engine in http.get("/ready").json()["engines"]}


class Load:
    """Short streams, a few at a time, from threads, until stopped: (start, end, ok) each."""

    def __init__(self, url: str, workers: int = 3) -> None:
        self.results: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                stream = self._client.completions.create(
                    model="demo", prompt="Once upon a time", max_tokens=16, stream=True
                )
                ok = sum(1 for _ in stream) > 0
            except openai.OpenAIError:
                ok = False
            self.results.append((started, time.monotonic(), ok))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


#: Per engine, in the two-worker `up` below.
TARGET = 2


def assert_two_workers_agree(url: str, http: httpx.Client) -> None:
    """Both workers answer; a conversation keeps its engine whichever worker takes each turn
    (a new connection per turn); a 16-stream burst through both never puts more than the
    target on an engine, the rest waiting in the workers' lines."""
    seen: dict[int, list[str]] = {}

    def both_workers_see_both_engines() -> bool:
        detail = httpx.get(url + "/ready", timeout=10).json()  # a new connection each time
        ready = sorted(engine["url"] for engine in detail["engines"] if engine["ready"])
        if len(ready) == 2:
            seen[detail["workers"]["this"]] = ready
        return set(seen) == {0, 1}

    wait_for(both_workers_see_both_engines, 120, "both workers answer, both engines ready")
    engines = seen[0]
    served = converse(lambda turn: url, range(300, 306), turns=3, engines=engines)
    assert_conversations_kept_their_engine(served)

    peak = dict.fromkeys(engines, 0.0)

    async def watch_engines() -> None:
        async with httpx.AsyncClient(timeout=10) as engine_http:
            for _ in range(60):
                for engine in engines:
                    stats = parse_stats((await engine_http.get(engine + "/metrics")).text)
                    peak[engine] = max(peak[engine], stats.running + stats.waiting)
                await asyncio.sleep(0.05)

    results = asyncio.run(burst(url, 16, on_sent=watch_engines))
    assert [status for status, *_ in results] == [200] * 16
    assert all(body.rstrip().endswith(b"data: [DONE]") for *_, body in results)
    assert max(peak.values()) <= TARGET, peak
    assert min(peak.values()) >= 1, peak  # both engines were used


def test_up_with_two_workers_restarts_a_stuck_engine_and_leaves_nothing_when_sigkilled(
    demo_cache, tmp_path
):
    """`up` with two gateway workers (GATEWAY_WORKERS=2): they agree (above); an engine stuck
    under load is found by a worker and restarted by `up` at its request; SIGKILL of `up`
    leaves no engine and no worker behind."""
    stall_s = 5
    log_path = tmp_path / "up.log"
    settings = {
        "MODEL_ID": "demo",
        "ENGINE_REPLICAS": "2",
        "ENGINE_STALL_TIMEOUT_S": str(stall_s),
        "ENGINE_HEALTH_INTERVAL_S": "0.5",
        "ENGINE_STATS_INTERVAL_S": "0.5",
        "GATEWAY_WORKERS": "2",
        "AUTH": "off",
        "ENGINE_MAX_INFLIGHT": str(TARGET),
        "ENGINE_CANARY_INTERVAL_S": "3600",  # the engines' counters are the tests' traffic
    }
    process, port = run_up(settings, demo_cache, log_path)
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(base_url=url, timeout=10)
    started: set[psutil.Process] = set()
    load = None
    try:
        wait_until_ok(url + "/ready", process, log_path, ENGINE_START_TIMEOUT_S)
        wait_for(
            lambda: all(e["state"] == "ready" for e in engine_states(http).values()),
            ENGINE_START_TIMEOUT_S,
            "both engines ready",
        )
        assert_two_workers_agree(url, http)
        started |= family(process.pid)
        workers = [p for p in started if p.cmdline()[3:4] == ["worker"]]
        assert len(workers) == 2, [p.cmdline() for p in started]
        port_0 = engine_states(http)["engine 0"]["url"].rsplit(":", 1)[1]
        [api_server] = [
            p
            for p in started
            if p.cmdline()[1:3] == ["-m", VLLM_SERVER_MODULE] and port_0 in p.cmdline()
        ]
        core = vllm_process(api_server.pid, "VLLM::EngineCore")
        assert "VLLM::EngineCore" in " ".join(core.cmdline())

        load = Load(url)
        time.sleep(2)
        core.suspend()  # engine 0 hangs; its /health stays 200
        stopped = time.monotonic()
        found_out = wait_for(
            lambda: engine_states(http)["engine 0"]["state"] != "ready",
            stall_s + 10,
            "the stuck engine left rotation",
        )
        state = engine_states(http)["engine 0"]
        # loading: being restarted; down: the worker answering saw the stuck process killed
        # for its restart (the worker that found the stall asked up over the pipe)
        assert state["state"] in ("stalled", "loading", "down"), state
        # From a few seconds after the stall timeout, every new request is served.
        time.sleep(max(0.0, stopped + stall_s + 3 - time.monotonic()))
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        for _ in range(5):
            reply = client.completions.create(model="demo", prompt="hi", max_tokens=4)
            assert reply.usage.completion_tokens == 4

        back = wait_for(
            lambda: engine_states(http)["engine 0"]["state"] == "ready",
            ENGINE_START_TIMEOUT_S,
            "engine 0 restarted and ready again",
        )
        started |= family(process.pid)  # the restarted engine's processes
        load.stop()
        after_stall = [ok for begun, _, ok in load.results if begun > stopped + stall_s + 3]
        assert after_stall and all(after_stall), load.results
        # Streams that sat on the stuck engine were moved: they took longer than half the
        # stall timeout and still succeeded. The first of them shows when service resumed.
        moved = [end for begun, end, ok in load.results if ok and end - begun > stall_s / 2]
        print(  # the numbers docs/architecture.md quotes
            f"\nkill -STOP → stall found out {found_out - stopped:.1f} s, first moved request "
            f"served elsewhere {min(moved, default=float('nan')) - stopped:.1f} s, engine 0 "
            f"ready again {back - stopped:.1f} s; {len(load.results)} streams, "
            f"{sum(not ok for _, _, ok in load.results)} failed"
        )
        # It serves again: spread requests until it has generated some tokens.
        deadline = time.monotonic() + 60
        while engine_states(http)["engine 0"].get("stats", {}).get("generation_tokens", 0) < 1:
            assert time.monotonic() < deadline, engine_states(http)["engine 0"]
            with ThreadPoolExecutor(4) as pool:
                list(
                    pool.map(
                        lambda _: client.completions.create(
                            model="demo", prompt="hi", max_tokens=4
                        ),
                        range(4),
                    )
                )
        output = log_path.read_text()
        assert "restarting in" in output  # the supervisor's own account
        assert "(worker " in output  # at a worker's request, over the pipe

        process.kill()  # SIGKILL: up runs no cleanup at all
        process.wait()
        wait_for(lambda: not alive(started), 10, "every engine and worker gone after up's SIGKILL")
    finally:
        if load is not None:
            load.stop()
        http.close()
        stop_process(process)
        for leftover in alive(started):  # never leave a stopped or orphaned engine behind
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
