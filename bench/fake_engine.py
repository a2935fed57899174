"""A FAKE engine, for load no CPU engine reaches: vLLM's routes answered at once with a fixed
chat completion (usage included). Only for benchmarks of the gateway's own cost; everything a
real engine can do is measured against one.

    .venv/bin/python bench/fake_engine.py PORT [MODEL]
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web

USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}


def app(model: str) -> web.Application:
    answer = orjson.dumps(
        {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "fake words"},
                    "finish_reason": "length",
                }
            ],
            "usage": USAGE,
        }
    )
    models = orjson.dumps({"object": "list", "data": [{"id": model, "object": "model"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def listed(request: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    async def generate(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=answer, content_type="application/json")

    application = web.Application()
    application.router.add_get("/health", health)
    application.router.add_get("/v1/models", listed)
    application.router.add_post("/v1/{tail:.*}", generate)
    return application


if __name__ == "__main__":
    uvloop.install()
    web.run_app(
        app(sys.argv[2] if len(sys.argv) > 2 else "demo"),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
    )
