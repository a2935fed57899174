"""A FAKE engine, for load no CPU engine reaches: vLLM's routes answered at once with a fixed
chat completion (usage included), or, for a streamed request, ``max_tokens`` chunks shaped as
vLLM's, one token each, PACE seconds apart (its usage chunk when asked for). Only for
benchmarks of the gateway's own cost; everything a real engine can do is measured against one.

    .venv/bin/python bench/fake_engine.py PORT [MODEL] [PACE] [FIRST] [paced]

FIRST: seconds before a stream's first chunk (an engine's prefill; 0 by default). ``paced``:
a request that is not streamed is answered after as long as its stream would take (FIRST plus
``max_tokens`` × PACE), with that many completion tokens (batch requests, which a real engine
does not answer at once); by default it is answered at once.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import uvloop
from aiohttp import web

USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}


def chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    document = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(document) + b"\n\n"


async def stream(
    request: web.Request, body: dict, model: str, pace_s: float, first_s: float = 0.0
) -> web.StreamResponse:
    """As vLLM streams: a role chunk, one chunk per token, the usage chunk if asked, [DONE]."""
    response = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    if first_s:
        await asyncio.sleep(first_s)
    tokens = body.get("max_tokens") or 16
    await response.write(chunk(model, ""))
    for index in range(tokens):
        await asyncio.sleep(pace_s)
        await response.write(chunk(model, " word", "length" if index == tokens - 1 else None))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": tokens + 12}
        document = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0}
        document.update(model=model, choices=[], usage=usage)
        await response.write(b"data: " + orjson.dumps(document) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def app(
    model: str, pace_s: float = 0.01, first_s: float = 0.0, paced: bool = False
) -> web.Application:
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

    async def generate(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if body.get("stream"):
            return await stream(request, body, model, pace_s, first_s)
        if not paced:
            return web.Response(body=answer, content_type="application/json")
        tokens = body.get("max_tokens") or 16
        await asyncio.sleep(first_s + tokens * pace_s)
        usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": tokens + 12}
        return web.Response(
            body=orjson.dumps({**orjson.loads(answer), "usage": usage}),
            content_type="application/json",
        )

    application = web.Application()
    application.router.add_get("/health", health)
    application.router.add_get("/v1/models", listed)
    application.router.add_post("/v1/{tail:.*}", generate)
    return application


if __name__ == "__main__":
    uvloop.install()
    web.run_app(
        app(
            sys.argv[2] if len(sys.argv) > 2 else "demo",
            float(sys.argv[3]) if len(sys.argv) > 3 else 0.01,
            float(sys.argv[4]) if len(sys.argv) > 4 else 0.0,
            len(sys.argv) > 5 and sys.argv[5] == "paced",
        ),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
    )
