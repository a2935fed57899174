"""ENGINE_URLS=dns://name:port against real engines: one name, two loopback addresses.

The gateway runs in a private mount namespace whose /etc/hosts (bind-mounted from a file this
test owns) maps ``engines.test`` to the engines' addresses, so the lookup is the real one
(getaddrinfo), and the test scales the "Service" by rewriting that file while the gateway runs.
The namespace is made inside a user namespace of its own (``unshare --map-root-user``), so no
root is needed: any user whose kernel allows user namespaces runs it, and where one does not,
the test fails saying so rather than skipping.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.support import stop_process, wait_for

from .conftest import ENGINE_ADDRESSES, Stack, start_gateway
from .otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.integration

NAME = "engines.test"

# Runs the gateway with HOSTS (its $0) bind-mounted over /etc/hosts in a new mount namespace,
# owned by a new user namespace in which this user is root; `exec` keeps one process, so
# stopping it stops the gateway.
PRIVATE_HOSTS = [
    "unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
    "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
]  # fmt: skip


def write_hosts(path: Path, *models: str) -> None:
    """Point NAME at the engines serving ``models``. Written in place: the bind mount follows
    the file, not the name."""
    lines = ["127.0.0.1 localhost"] + [f"{ENGINE_ADDRESSES[m]} {NAME}" for m in models]
    with path.open("w") as hosts:
        hosts.write("\n".join(lines) + "\n")


def served_models(http: httpx.Client) -> set[str]:
    return {card["id"] for card in http.get("/v1/models").json()["data"]}


def test_one_name_stands_for_every_engine_and_scaling_needs_no_restart(
    stack: Stack, otlp: OtlpReceiver, tmp_path: Path
):
    hosts = tmp_path / "hosts"
    write_hosts(hosts, "demo")  # one engine behind the name at first
    gateway_url, gateway = start_gateway(
        f"dns://{NAME}:{stack.engine_port}",
        otlp.endpoint,
        stack.log_dir / "gateway-dns.log",
        wrapper=[*PRIVATE_HOSTS, str(hosts)],
        ENGINE_DNS_REFRESH_S="0.3",
    )
    http = httpx.Client(base_url=gateway_url, timeout=10)
    try:
        client = openai.OpenAI(base_url=gateway_url + "/v1", api_key="unused", max_retries=0)
        assert served_models(http) == {"demo"}

        write_hosts(hosts, "demo", "demo-v1")  # scale out: both addresses under one name
        wait_for(lambda: served_models(http) == {"demo", "demo-v1"}, 60, "scaled out")
        ready = http.get("/ready").json()
        assert sorted(e["name"] for e in ready["engines"]) == [
            f"engine 127.0.0.1:{stack.engine_port}",
            f"engine 127.0.0.2:{stack.engine_port}",
        ]
        for model in ("demo", "demo-v1"):
            answer = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
            assert answer.model == model
            assert answer.usage.completion_tokens == 3

        write_hosts(hosts, "demo-v1")  # scale in: the first engine leaves the name
        wait_for(lambda: served_models(http) == {"demo-v1"}, 60, "scaled in")
        with pytest.raises(openai.APIStatusError) as gone:
            client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
        assert gone.value.status_code == 503  # a model seen before: "retry", not 404
        assert gone.value.response.headers["retry-after"]
    finally:
        http.close()
        stop_process(gateway)
