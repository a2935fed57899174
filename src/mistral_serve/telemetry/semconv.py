"""The names this project emits: OpenTelemetry GenAI, HTTP and hardware semantic conventions,
plus the gateway's own ``mistral_serve.*`` metrics. One place, so docs/observability.md, the
SigNoz dashboard and the tests can be checked against it.

The GenAI conventions live in open-telemetry/semantic-conventions-genai; the Python package's
constants for them are deprecated and incomplete, so the strings are written out here.
"""

from __future__ import annotations

from typing import Final

# -- GenAI span and metric attributes ---------------------------------------------------------
OPERATION_NAME: Final = "gen_ai.operation.name"
PROVIDER_NAME: Final = "gen_ai.provider.name"
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
REQUEST_TOP_P: Final = "gen_ai.request.top_p"
REQUEST_SEED: Final = "gen_ai.request.seed"
REQUEST_STREAM: Final = "gen_ai.request.stream"
REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
REQUEST_STOP_SEQUENCES: Final = "gen_ai.request.stop_sequences"
RESPONSE_ID: Final = "gen_ai.response.id"
CONVERSATION_ID: Final = "gen_ai.conversation.id"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK: Final = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
#: Prompt tokens the engine's prefix cache served (usage.prompt_tokens_details.cached_tokens).
USAGE_CACHE_READ_TOKENS: Final = "gen_ai.usage.cache_read.input_tokens"
TOKEN_TYPE: Final = "gen_ai.token.type"
INPUT_MESSAGES: Final = "gen_ai.input.messages"
OUTPUT_MESSAGES: Final = "gen_ai.output.messages"
ERROR_TYPE: Final = "error.type"

#: The provider is the model family's owner; ``server.address`` tells self-hosted traffic
#: apart from Mistral's own API.
PROVIDER: Final = "mistral_ai"
TOKEN_INPUT: Final = "input"
TOKEN_OUTPUT: Final = "output"

# -- HTTP server span attributes (stable HTTP semconv) ----------------------------------------
HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
HTTP_ROUTE: Final = "http.route"
URL_PATH: Final = "url.path"
URL_SCHEME: Final = "url.scheme"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
CLIENT_ADDRESS: Final = "client.address"
USER_AGENT: Final = "user_agent.original"
NETWORK_PROTOCOL_VERSION: Final = "network.protocol.version"

# -- the gateway's own attributes ---------------------------------------------------------------
REQUEST_ID: Final = "mistral_serve.request.id"
ENGINE_NAME: Final = "mistral_serve.engine.name"
ENGINE_STATE_ATTRIBUTE: Final = "mistral_serve.engine.state"
RESTART_REASON: Final = "mistral_serve.restart.reason"
REJECTION_REASON: Final = "mistral_serve.rejection.reason"
KEY_ID: Final = "mistral_serve.key.id"  # an API key's public id ("static" for API_KEY)
ROUTING_POLICY: Final = "mistral_serve.routing.policy"
ROUTING_REASON: Final = "mistral_serve.routing.reason"  # prefix, session, load, only-choice
ROUTING_PREFIX_SHARE: Final = "mistral_serve.routing.prefix_share"
#: The share of the prompt the chosen engine's cache actually served, beside the routing's
#: prediction above; the metric is the prediction minus it, per request (0: routing guessed
#: right; above 0: it believed the engine held more than it did).
ROUTING_CACHED_SHARE: Final = "mistral_serve.routing.cached_share"
ROUTING_SHARE_ERROR: Final = "mistral_serve.routing.prefix_share.error"
ADMISSION_OUTCOME: Final = "mistral_serve.admission.outcome"  # admitted, rejected, abandoned
#: A LoRA adapter's request: the adapter, whether its engine held it when chosen, and how long
#: the request waited for it to load (a span attribute); on the adapter metrics, why a load was
#: made (request, sync, admin) and how it ended (loaded, failed).
ADAPTER_NAME: Final = "mistral_serve.adapter.name"
ADAPTER_RESIDENT: Final = "mistral_serve.adapter.resident"
ADAPTER_LOAD_WAIT: Final = "mistral_serve.adapter.load_wait_s"
ADAPTER_LOAD_REASON: Final = "mistral_serve.adapter.load.reason"
ADAPTER_LOAD_OUTCOME: Final = "mistral_serve.adapter.load.outcome"
#: A batch job's id: on its job span, on each of its requests' spans, and on the batch metrics
#: as the request's state (succeeded, failed, released, cancelled, expired) and the job's.
BATCH_ID: Final = "mistral_serve.batch.id"
BATCH_CUSTOM_ID: Final = "mistral_serve.batch.custom_id"  # a batch request's, on its span
BATCH_REQUEST_STATE: Final = "mistral_serve.batch.request.state"
BATCH_JOB_STATE: Final = "mistral_serve.batch.job.state"

# -- metrics: (name, unit, description); histogram bucket boundaries are the conventions' ------
REQUEST_DURATION: Final = "gen_ai.server.request.duration"
TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
TIME_PER_OUTPUT_TOKEN: Final = "gen_ai.server.time_per_output_token"
# The conventions define token usage only as a client metric; the gateway is the client of its
# engines and reads usage from their answers, as other AI gateways do.
TOKEN_USAGE: Final = "gen_ai.client.token.usage"
ACTIVE_REQUESTS: Final = "mistral_serve.gateway.active_requests"
REJECTIONS: Final = "mistral_serve.gateway.rejections"
UPSTREAM_ERRORS: Final = "mistral_serve.gateway.upstream_errors"
READY_ENGINES: Final = "mistral_serve.engines.ready"
ENGINE_STATE: Final = "mistral_serve.engines.state"
ENGINE_STALLS: Final = "mistral_serve.engines.stalls"
ENGINE_EJECTIONS: Final = "mistral_serve.engines.ejections"
ENGINE_RESTARTS: Final = "mistral_serve.engines.restarts"
ENGINE_MEMORY: Final = "mistral_serve.engines.memory.resident"
#: LoRA adapters on the engines: loads (by reason and outcome) and their duration, evictions,
#: and 1 for each adapter an engine of its base holds (0 for one it does not).
ADAPTER_LOADS: Final = "mistral_serve.adapters.loads"
ADAPTER_LOAD_DURATION: Final = "mistral_serve.adapters.load.duration"
ADAPTER_EVICTIONS: Final = "mistral_serve.adapters.evictions"
ADAPTER_RESIDENCY: Final = "mistral_serve.adapters.resident"
#: A request that left a failed engine for another: the span event, the counter (by kind:
#: ``continued`` mid-stream, ``restarted`` before anything reached the client, ``impossible``
#: when it could not go on), and the event's attributes.
MIGRATION_EVENT: Final = "mistral_serve.migration"
MIGRATIONS: Final = "mistral_serve.engines.migrations"
#: Batch jobs: requests ended by state (a counter), jobs by state and requests waiting to run
#: per model (observed from the store).
BATCH_REQUESTS: Final = "mistral_serve.batch.requests"
BATCH_JOBS: Final = "mistral_serve.batch.jobs"
BATCH_QUEUE_DEPTH: Final = "mistral_serve.batch.queue.depth"
MIGRATION_KIND: Final = "mistral_serve.migration.kind"
MIGRATION_ENGINE_LEFT: Final = "mistral_serve.migration.engine_left"
MIGRATION_TOKENS_CARRIED: Final = "mistral_serve.migration.tokens_carried"
QUEUE_DURATION: Final = "mistral_serve.admission.queue.duration"
QUEUE_DEPTH: Final = "mistral_serve.admission.queue.depth"
#: Each tenant waiting in a model's line (a key's id, or ``client:``/``user:`` and a hash):
#: its requests there, and its weighted share of its priority's queued tokens (0..1).
QUEUE_TENANT_WAITING: Final = "mistral_serve.admission.queue.tenant.waiting"
QUEUE_TENANT_SHARE: Final = "mistral_serve.admission.queue.tenant.share"
TENANT: Final = "mistral_serve.tenant"
PRIORITY: Final = "mistral_serve.priority"
#: Tenancy: failed reads of the key store, failed checks of the limit counters (Redis), and
#: ledger rows written to the database or spooled to a file while it was down.
KEY_STORE_ERRORS: Final = "mistral_serve.keys.store_errors"
LIMITS_STORE_ERRORS: Final = "mistral_serve.limits.store_errors"
LEDGER_ROWS: Final = "mistral_serve.ledger.rows"
LEDGER_PENDING: Final = "mistral_serve.ledger.pending"
LEDGER_OUTCOME: Final = "mistral_serve.ledger.outcome"  # written, spooled

REQUEST_DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TIME_TO_FIRST_TOKEN_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TIME_PER_OUTPUT_TOKEN_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
QUEUE_DURATION_BUCKETS: Final = (
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)  # fmt: skip
SHARE_ERROR_BUCKETS: Final = (
    -0.75, -0.5, -0.25, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75,
)  # fmt: skip
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip

#: Histogram name → explicit bucket boundaries (the SDK's defaults suit none of these).
HISTOGRAM_BUCKETS: Final = {
    REQUEST_DURATION: REQUEST_DURATION_BUCKETS,
    TIME_TO_FIRST_TOKEN: TIME_TO_FIRST_TOKEN_BUCKETS,
    TIME_PER_OUTPUT_TOKEN: TIME_PER_OUTPUT_TOKEN_BUCKETS,
    TOKEN_USAGE: TOKEN_USAGE_BUCKETS,
    QUEUE_DURATION: QUEUE_DURATION_BUCKETS,
    ROUTING_SHARE_ERROR: SHARE_ERROR_BUCKETS,
    ADAPTER_LOAD_DURATION: QUEUE_DURATION_BUCKETS,  # milliseconds to seconds, as waits are
}

# -- hardware (NVML) ----------------------------------------------------------------------------
HW_GPU_UTILIZATION: Final = "hw.gpu.utilization"
HW_GPU_MEMORY_USAGE: Final = "hw.gpu.memory.usage"
HW_GPU_MEMORY_LIMIT: Final = "hw.gpu.memory.limit"
HW_GPU_MEMORY_UTILIZATION: Final = "hw.gpu.memory.utilization"
HW_POWER: Final = "hw.power"
HW_TEMPERATURE: Final = "hw.temperature"
HW_ID: Final = "hw.id"
HW_NAME: Final = "hw.name"
HW_VENDOR: Final = "hw.vendor"
HW_TYPE: Final = "hw.type"

#: Every metric this project emits (the gateway's, the supervisor's, NVML's): what a dashboard
#: may read besides vLLM's own ``vllm:*``. A test holds it to the instruments really created.
METRICS: Final = frozenset(
    {
        REQUEST_DURATION,
        TIME_TO_FIRST_TOKEN,
        TIME_PER_OUTPUT_TOKEN,
        TOKEN_USAGE,
        ACTIVE_REQUESTS,
        REJECTIONS,
        UPSTREAM_ERRORS,
        READY_ENGINES,
        ENGINE_STATE,
        ENGINE_STALLS,
        ENGINE_EJECTIONS,
        ENGINE_RESTARTS,
        ENGINE_MEMORY,
        ADAPTER_LOADS,
        ADAPTER_LOAD_DURATION,
        ADAPTER_EVICTIONS,
        ADAPTER_RESIDENCY,
        MIGRATIONS,
        ROUTING_SHARE_ERROR,
        QUEUE_DURATION,
        QUEUE_DEPTH,
        QUEUE_TENANT_WAITING,
        QUEUE_TENANT_SHARE,
        KEY_STORE_ERRORS,
        LIMITS_STORE_ERRORS,
        LEDGER_ROWS,
        LEDGER_PENDING,
        HW_GPU_UTILIZATION,
        HW_GPU_MEMORY_USAGE,
        HW_GPU_MEMORY_LIMIT,
        HW_GPU_MEMORY_UTILIZATION,
        HW_POWER,
        HW_TEMPERATURE,
    }
)
