"""A batch input file checked line by line: the first bad line named, with why."""

from __future__ import annotations

import orjson
import pytest

from mistral_serve.batch.lines import read_lines
from mistral_serve.errors import InvalidRequestError

CHAT = "/v1/chat/completions"


def line(custom_id: str = "r1", **fields) -> bytes:
    body = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    document = {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body} | fields
    return orjson.dumps(document)


def test_openai_and_mistral_lines_are_read_in_order():
    mistral = orjson.dumps(
        {"custom_id": "m", "body": {"messages": [{"role": "user", "content": "x"}]}}
    )
    lines = read_lines(b"\n".join([line("a"), b"", line("b")]), CHAT)
    assert [(read.number, read.custom_id) for read in lines] == [(1, "a"), (3, "b")]
    [filled] = read_lines(mistral + b"\n", CHAT, model="demo")
    assert filled.body["model"] == "demo"  # the job's model, where the line names none


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        (b"{not json", "line 2: not JSON"),
        (b"[1, 2]", "line 2: not a JSON object"),
        (line(""), "line 2: `custom_id` must be a non-empty string"),
        (line("a"), "line 2: `custom_id` 'a' is used by an earlier line"),
        (line("b", method="GET"), "line 2: `method` must be POST"),
        (line("b", url="/v1/embeddings"), "line 2: `url` must be the batch's endpoint"),
        (line("b", body=[]), "line 2: `body` must be a JSON object"),
        (
            line("b", body={"model": "demo", "messages": [], "stream": True}),
            "line 2: `body.stream`",
        ),
        (line("b", body={"model": "demo", "messages": "hi"}), "line 2: body.messages"),
        (
            line("b", body={"model": "other", "messages": [{"role": "user", "content": "x"}]}),
            "line 2: every request of a batch must name the same `model`",
        ),
    ],
)
def test_the_first_bad_line_is_named_with_why(second, reason):
    with pytest.raises(InvalidRequestError) as bad:
        read_lines(line("a") + b"\n" + second + b"\n" + line("c"), CHAT)
    assert reason in bad.value.message and bad.value.param == "input_file_id"


def test_an_endpoint_not_served_or_an_empty_file_is_refused():
    with pytest.raises(InvalidRequestError, match="not one of"):
        read_lines(line(), "/v1/audio/speech")
    with pytest.raises(InvalidRequestError, match="no requests"):
        read_lines(b"\n\n", CHAT)


def test_requests_sharing_a_prefix_sort_together():
    from mistral_serve.batch.lines import order_key
    from mistral_serve.gateway.pipeline import Endpoint

    systems = ["You are a careful classifier. " * 40, "You write haiku about the sea. " * 40]
    bodies = [
        {
            "model": "demo",
            "messages": [
                {"role": "system", "content": systems[n % 2]},
                {"role": "user", "content": f"item {n}"},
            ],
        }
        for n in range(20)
    ]
    ordered = sorted(range(20), key=lambda n: order_key("demo", bodies[n], Endpoint.CHAT))
    groups = [n % 2 for n in ordered]
    assert groups in ([0] * 10 + [1] * 10, [1] * 10 + [0] * 10)  # one prefix, then the other
    # Embeddings and completions are keyed by their text the same way.
    texts = [
        order_key("demo", {"input": "shared " * 100 + str(n)}, Endpoint.EMBEDDINGS)
        for n in range(3)
    ]
    assert len({text[:64] for text in texts}) == 1
