"""What routing costs the gateway per request: the route key (hashing the text) and a
prefix-load choice with learning, for conversations of growing size. CPU time on the event
loop, so it is the number to keep small.

    .venv/bin/python bench/routing_cost.py
"""

from __future__ import annotations

import random
import time

from mistral_serve.engines.registry import EngineRegistry
from mistral_serve.routing import PrefixLoad, route_key

WORDS = "harbour ship weather lantern keeper tide rope anchor gull storm".split()


def main() -> None:
    registry = EngineRegistry(["http://10.0.0.1:8000", "http://10.0.0.2:8000"])
    policy = PrefixLoad()
    rng = random.Random(1)
    for words in (200, 4_000, 24_000):
        text = " ".join(rng.choice(WORDS) for _ in range(words))
        document = {"model": "m", "messages": [{"role": "user", "content": text}]}
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            key = route_key("m", document)
            policy.choose(registry.engines, key, time.monotonic())
        per_request = (time.perf_counter() - started) / rounds
        print(
            f"{len(text) / 1024:6.0f} KiB of text ({len(key.blocks):4d} blocks): "
            f"{per_request * 1e6:6.0f} µs per request"
        )


if __name__ == "__main__":
    main()
