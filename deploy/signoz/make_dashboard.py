"""Writes mistral-serve-dashboard.json, the SigNoz dashboard (Dashboards → New → Import JSON).

The panels are declared below as data; run ``python deploy/signoz/make_dashboard.py`` after
changing them. tests/unit/test_dashboard.py checks the JSON is current and that every metric it
reads is one the gateway emits; the integration suite checks the vllm:* names against a real
engine's /metrics.

Histograms are read through SigNoz's ``<name>.bucket`` series (p50/p95/p99), counters as rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("mistral-serve-dashboard.json")
STEP = 60

# (panel id, title, unit, description, queries, formula)
# A query is (metric, time aggregation, space aggregation, legend, group by, filter).
Query = tuple[str, str, str, str, list[str], str]


def q(metric: str, time: str, space: str, legend: str, by=(), where: str = "") -> Query:
    return (metric, time, space, legend, list(by), where)


def percentiles(metric: str) -> list[Query]:
    return [q(metric, "", p, p) for p in ("p50", "p95", "p99")]


ROWS: list[tuple[str, list[tuple[str, str, str, str, list[Query], str | None]]]] = [
    (
        "Traffic and errors",
        [
            (
                "requests",
                "Request rate",
                "reqps",
                "Generation requests per second through the gateway.",
                [
                    q(
                        "gen_ai.server.request.duration.count",
                        "rate",
                        "sum",
                        "{{gen_ai.operation.name}}",
                        ["gen_ai.operation.name"],
                    )
                ],
                None,
            ),
            (
                "errors",
                "Error rate (%)",
                "percent",
                "Share of requests that ended with an error.type (client_closed excluded).",
                [
                    q(
                        "gen_ai.server.request.duration.count",
                        "rate",
                        "sum",
                        "errors",
                        where="error.type EXISTS AND error.type != 'client_closed'",
                    ),
                    q("gen_ai.server.request.duration.count", "rate", "sum", "all"),
                ],
                "A * 100 / B",
            ),
            (
                "active",
                "Requests in flight",
                "none",
                "Gateway requests not yet finished.",
                [q("mistral_serve.gateway.active_requests", "latest", "sum", "in flight")],
                None,
            ),
            (
                "rejections",
                "Rejections by reason",
                "reqps",
                "Requests the gateway (or an engine, engine_rejected) refused.",
                [
                    q(
                        "mistral_serve.gateway.rejections",
                        "rate",
                        "sum",
                        "{{mistral_serve.rejection.reason}}",
                        ["mistral_serve.rejection.reason"],
                    )
                ],
                None,
            ),
            (
                "upstream_errors",
                "Upstream errors by type",
                "reqps",
                "Failed engine calls.",
                [
                    q(
                        "mistral_serve.gateway.upstream_errors",
                        "rate",
                        "sum",
                        "{{error.type}}",
                        ["error.type"],
                    )
                ],
                None,
            ),
            (
                "ready_engines",
                "Ready engines",
                "none",
                "Engines in rotation.",
                [q("mistral_serve.engines.ready", "latest", "sum", "ready")],
                None,
            ),
        ],
    ),
    (
        "Latency: gateway (what clients see) and engine",
        [
            (
                "gw_ttft",
                "Gateway time to first token",
                "s",
                "Streams: arrival to first event.",
                percentiles("gen_ai.server.time_to_first_token.bucket"),
                None,
            ),
            (
                "gw_tpot",
                "Gateway time per output token",
                "s",
                "Decode time per token after the first.",
                percentiles("gen_ai.server.time_per_output_token.bucket"),
                None,
            ),
            (
                "gw_e2e",
                "Gateway end-to-end latency",
                "s",
                "Arrival to last byte.",
                percentiles("gen_ai.server.request.duration.bucket"),
                None,
            ),
            (
                "engine_ttft",
                "Engine time to first token",
                "s",
                "vLLM's own measurement.",
                percentiles("vllm:time_to_first_token_seconds.bucket"),
                None,
            ),
            (
                "engine_itl",
                "Engine inter-token latency",
                "s",
                "vLLM's own measurement.",
                percentiles("vllm:inter_token_latency_seconds.bucket"),
                None,
            ),
            (
                "engine_e2e",
                "Engine end-to-end latency",
                "s",
                "vLLM's own measurement.",
                percentiles("vllm:e2e_request_latency_seconds.bucket"),
                None,
            ),
        ],
    ),
    (
        "Tokens",
        [
            (
                "tokens",
                "Tokens per second in and out",
                "none",
                "Prefill (prompt) and decode rates.",
                [
                    q("vllm:prompt_tokens_total", "rate", "sum", "in (prompt)"),
                    q("vllm:generation_tokens_total", "rate", "sum", "out (generated)"),
                ],
                None,
            ),
            (
                "gw_tokens",
                "Gateway token usage per second",
                "none",
                "From each answer's usage, by gen_ai.token.type.",
                [
                    q(
                        "gen_ai.client.token.usage.sum",
                        "rate",
                        "sum",
                        "{{gen_ai.token.type}}",
                        ["gen_ai.token.type"],
                    )
                ],
                None,
            ),
        ],
    ),
    (
        "Traffic control: routing and admission",
        [
            (
                "prefix_hits_by_engine",
                "Prefix-cache hit rate by engine (%)",
                "percent",
                "Prompt tokens each engine served from its cache: what prefix-aware routing "
                "buys (docs/routing.md).",
                [
                    q(
                        "vllm:prefix_cache_hits_total",
                        "rate",
                        "sum",
                        "hits {{service.instance.id}}",
                        ["service.instance.id"],
                    ),
                    q(
                        "vllm:prefix_cache_queries_total",
                        "rate",
                        "sum",
                        "queries {{service.instance.id}}",
                        ["service.instance.id"],
                    ),
                ],
                "A * 100 / B",
            ),
            (
                "queue_depth",
                "Requests waiting for an engine",
                "none",
                "The gateway's admission line per model: requests no engine could start yet "
                "(every engine at ENGINE_MAX_INFLIGHT).",
                [
                    q(
                        "mistral_serve.admission.queue.depth",
                        "latest",
                        "sum",
                        "{{gen_ai.request.model}}",
                        ["gen_ai.request.model"],
                    )
                ],
                None,
            ),
            (
                "overloaded",
                "429s and drains per second",
                "reqps",
                "Requests answered 429 server_overloaded (line full, waited too long) or 503 "
                "while draining, by reason.",
                [
                    q(
                        "mistral_serve.gateway.rejections",
                        "rate",
                        "sum",
                        "{{mistral_serve.rejection.reason}}",
                        ["mistral_serve.rejection.reason"],
                        where="mistral_serve.rejection.reason IN "
                        "('queue_full', 'queue_timeout', 'draining')",
                    )
                ],
                None,
            ),
            (
                "queue_wait",
                "Time waiting for an engine",
                "s",
                "How long requests waited in the admission line (0 for most).",
                percentiles("mistral_serve.admission.queue.duration.bucket"),
                None,
            ),
        ],
    ),
    (
        "Engine state: stalls, ejections, restarts",
        [
            (
                "engine_states",
                "Engines by state",
                "none",
                "How many engines are ready, loading, stalled, ejected or down (the gateway's "
                "view; /ready says why).",
                [
                    q(
                        "mistral_serve.engines.state",
                        "latest",
                        "sum",
                        "{{mistral_serve.engine.state}}",
                        ["mistral_serve.engine.state"],
                    )
                ],
                None,
            ),
            (
                "engine_stalls",
                "Stalls and ejections",
                "none",
                "Engines found stuck (requests in flight, no progress) and ejected after "
                "consecutive failed requests, per second.",
                [
                    q(
                        "mistral_serve.engines.stalls",
                        "rate",
                        "sum",
                        "stalled {{mistral_serve.engine.name}}",
                        ["mistral_serve.engine.name"],
                    ),
                    q(
                        "mistral_serve.engines.ejections",
                        "rate",
                        "sum",
                        "ejected {{mistral_serve.engine.name}}",
                        ["mistral_serve.engine.name"],
                    ),
                ],
                None,
            ),
            (
                "engine_restarts",
                "Engine restarts by reason",
                "none",
                "Restarts by the supervisor (`up`): after a stall, or after the engine exited.",
                [
                    q(
                        "mistral_serve.engines.restarts",
                        "rate",
                        "sum",
                        "{{mistral_serve.restart.reason}}",
                        ["mistral_serve.restart.reason"],
                    )
                ],
                None,
            ),
        ],
    ),
    (
        "Engines: scheduler and KV cache",
        [
            (
                "running_waiting",
                "Running and waiting requests",
                "none",
                "vLLM's scheduler queues.",
                [
                    q("vllm:num_requests_running", "latest", "sum", "running"),
                    q("vllm:num_requests_waiting", "latest", "sum", "waiting"),
                ],
                None,
            ),
            (
                "kv_cache",
                "KV-cache usage",
                "percentunit",
                "Fraction of KV-cache blocks in use.",
                [q("vllm:kv_cache_usage_perc", "latest", "max", "{{engine}}")],
                None,
            ),
            (
                "prefix_hits",
                "Prefix-cache hit rate (%)",
                "percent",
                "Prompt tokens served from cache.",
                [
                    q("vllm:prefix_cache_hits_total", "rate", "sum", "hits"),
                    q("vllm:prefix_cache_queries_total", "rate", "sum", "queries"),
                ],
                "A * 100 / B",
            ),
        ],
    ),
    (
        "GPUs",
        [
            (
                "gpu_util",
                "GPU utilization",
                "percentunit",
                "NVML, per GPU.",
                [q("hw.gpu.utilization", "latest", "max", "{{hw.id}}", ["hw.id"])],
                None,
            ),
            (
                "gpu_memory",
                "GPU memory used",
                "bytes",
                "NVML, per GPU.",
                [q("hw.gpu.memory.usage", "latest", "max", "{{hw.id}}", ["hw.id"])],
                None,
            ),
            (
                "gpu_power",
                "GPU power",
                "watt",
                "NVML, per GPU.",
                [q("hw.power", "latest", "max", "{{hw.id}}", ["hw.id"])],
                None,
            ),
        ],
    ),
]


def builder_query(name: str, query: Query) -> dict[str, Any]:
    metric, time, space, legend, by, where = query
    return {
        "type": "builder_query",
        "spec": {
            "name": name,
            "stepInterval": STEP,
            "signal": "metrics",
            "source": "",
            "aggregations": [
                {
                    "metricName": metric,
                    "temporality": "cumulative",
                    "timeAggregation": time,
                    "spaceAggregation": space,
                }
            ],
            "disabled": False,
            "filter": {"expression": where},
            "groupBy": [{"name": key, "fieldContext": "attribute"} for key in by],
            "having": {"expression": ""},
            "legend": legend,
            "limit": 100,
            "order": [{"key": {"name": "__result"}, "direction": "desc"}],
        },
    }


def panel(title: str, unit: str, description: str, queries: list[Query], formula: str | None):
    built = [builder_query(chr(ord("A") + i), query) for i, query in enumerate(queries)]
    if formula:
        for query in built:
            query["spec"]["disabled"] = True
        built.append(
            {
                "type": "builder_formula",
                "spec": {"name": "F1", "expression": formula, "legend": title},
            }
        )
    return {
        "kind": "Panel",
        "spec": {
            "display": {"name": title, "description": description},
            "plugin": {
                "kind": "signoz/TimeSeriesPanel",
                "spec": {
                    "visualization": {"timePreference": "global_time", "fillSpans": False},
                    "formatting": {"unit": unit, "decimalPrecision": "2"},
                    "legend": {"position": "bottom", "mode": "list", "customColors": None},
                    "thresholds": None,
                },
            },
            "queries": [
                {
                    "kind": "time_series",
                    "spec": {
                        "plugin": {"kind": "signoz/CompositeQuery", "spec": {"queries": built}}
                    },
                }
            ],
            "links": [],
        },
    }


def dashboard() -> dict[str, Any]:
    panels: dict[str, Any] = {}
    layouts = []
    for row_title, row in ROWS:
        items = []
        for index, (panel_id, title, unit, description, queries, formula) in enumerate(row):
            panels[panel_id] = panel(title, unit, description, queries, formula)
            items.append(
                {
                    "x": (index % 3) * 4,
                    "y": (index // 3) * 7,
                    "width": 4,
                    "height": 7,
                    "content": {"$ref": f"#/spec/panels/{panel_id}"},
                }
            )
        layouts.append(
            {
                "kind": "Grid",
                "spec": {
                    "display": {"title": row_title, "collapse": {"open": True}},
                    "items": items,
                },
            }
        )
    return {
        "schemaVersion": "v6",
        "generateName": True,
        "tags": [{"key": "tag", "value": tag} for tag in ("mistral-serve", "vllm", "llm", "gpu")],
        "spec": {
            "display": {
                "name": "mistral-serve",
                "description": "Gateway (OpenTelemetry GenAI conventions) and vLLM engines: "
                "traffic, errors, latency, tokens, scheduler, KV cache and GPUs.",
            },
            "variables": [],
            "panels": panels,
            "layouts": layouts,
        },
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
