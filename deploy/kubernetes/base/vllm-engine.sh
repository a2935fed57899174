#!/bin/sh
# One vLLM engine on the official vllm/vllm-openai image, configured by mistral-serve's settings
# (config/sample.env): the flags `mistral-serve up` gives its own engines
# (src/mistral_serve/engines/vllm_args.py; tests/unit/test_engine_script.py keeps the two in
# step). docker-compose.yml and the Kubernetes base both run it as the engine's entrypoint.
#
# Reads: MODEL_ID SERVED_MODEL_NAME TENSOR_PARALLEL_SIZE GPU_MEMORY_UTILIZATION MAX_MODEL_LEN
#        DTYPE ENGINE_MAX_INFLIGHT (→ --max-num-seqs: it plus an eighth, the headroom a quiet
#        key may use while a loud one fills the rest; default 256)
#        ENGINE_EXTRA_ARGS (shell words, last: they override the rest)
#        ENGINE_PATCHES (on, default | off: the project's vLLM plugin, in the engine image)
#        HUGGING_FACE_HUB_TOKEN (→ HF_TOKEN)  ENGINE_HOST/ENGINE_PORT (default 0.0.0.0:8000)
#        OTEL_EXPORTER_OTLP_ENDPOINT/_PROTOCOL/_HEADERS OTEL_SERVICE_NAME
#        OTEL_RESOURCE_ATTRIBUTES ENGINE_REPLICA (names this engine in its spans)
set -eu

model="${MODEL_ID:-mistralai/Mistral-7B-Instruct-v0.1}"
dtype="${DTYPE:-auto}"
[ "$dtype" = auto ] && dtype=bfloat16  # engines here run on GPUs
target="${ENGINE_MAX_INFLIGHT:-256}"
headroom=$((target / 8))  # config.fair_headroom: an eighth of the target, at least one
[ "$headroom" -ge 1 ] || headroom=1

set -- \
    --model "$model" \
    --served-model-name "${SERVED_MODEL_NAME:-$model}" \
    --host "${ENGINE_HOST:-0.0.0.0}" \
    --port "${ENGINE_PORT:-8000}" \
    --tensor-parallel-size "${TENSOR_PARALLEL_SIZE:-1}" \
    --dtype "$dtype" \
    --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.9}" \
    --enable-prefix-caching \
    --max-num-seqs "$((target + headroom))" \
    --scheduling-policy priority \
    --enable-prompt-tokens-details \
    --disable-uvicorn-access-log
if [ -n "${MAX_MODEL_LEN:-}" ]; then
    set -- "$@" --max-model-len "$MAX_MODEL_LEN"
fi

# Checkpoints in Mistral's own format are served with mistral_common and Mistral's tool parser
# (the same repos and folder test as src/mistral_serve/models/catalog.py and checkpoint.py).
mistral_format=false
if [ -d "$model" ]; then
    if [ -f "$model/params.json" ] \
        && ls "$model"/consolidated*.safetensors >/dev/null 2>&1 \
        && { [ -f "$model/tekken.json" ] || ls "$model"/tokenizer.model.v* >/dev/null 2>&1; }; then
        mistral_format=true
    fi
elif printf '%s\n' "$model" | grep -Eiq '^mistralai/(Mistral-7B-Instruct-v0\.3|Mistral-7B-v0\.3|Mistral-Nemo-.*|Mistral-Small-.*|Mistral-Large-.*|Mistral-Medium-.*|Ministral-.*|Magistral-.*|Devstral-.*|Codestral-.*|Pixtral-.*|Mathstral-.*|Mixtral-8x22B-.*v0\.3)$'; then
    mistral_format=true
fi
if [ "$mistral_format" = true ]; then
    set -- "$@" --tokenizer-mode mistral --config-format mistral --load-format mistral \
        --enable-auto-tool-choice --tool-call-parser mistral
fi

# vLLM's llm_request spans, children of the gateway's (it forwards traceparent).
if [ -n "${OTEL_EXPORTER_OTLP_ENDPOINT:-}" ] && [ "${OTEL_SDK_DISABLED:-false}" != true ]; then
    protocol="${OTEL_EXPORTER_OTLP_PROTOCOL:-http/protobuf}"
    endpoint="${OTEL_EXPORTER_OTLP_ENDPOINT%/}"
    [ "$protocol" = grpc ] || endpoint="$endpoint/v1/traces"
    set -- "$@" --otlp-traces-endpoint "$endpoint"
    export OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="$protocol"
    export OTEL_SERVICE_NAME="${OTEL_SERVICE_NAME:-mistral-serve}-engine"
    if [ -n "${ENGINE_REPLICA:-}" ]; then
        export OTEL_RESOURCE_ATTRIBUTES="${OTEL_RESOURCE_ATTRIBUTES:+$OTEL_RESOURCE_ATTRIBUTES,}mistral_serve.engine.replica=$ENGINE_REPLICA"
    fi
fi

# The project's vLLM plugin (mistral_serve.engine_plugin; deploy/Dockerfile's engine target)
# reads ENGINE_PATCHES itself. As under `up`: where VLLM_PLUGINS lists the plugins vLLM may load,
# this one joins the list, and an image without the plugin is said out loud.
export ENGINE_PATCHES="${ENGINE_PATCHES:-on}"
if [ "$ENGINE_PATCHES" = on ]; then
    if [ -n "${VLLM_PLUGINS+set}" ]; then
        case ",$VLLM_PLUGINS," in
            *,mistral_serve_patches,*) ;;
            *) export VLLM_PLUGINS="${VLLM_PLUGINS:+$VLLM_PLUGINS,}mistral_serve_patches" ;;
        esac
    fi
    if ! python3 -c "import mistral_serve.engine_plugin" 2>/dev/null; then
        echo "vllm-engine.sh: WARNING: ENGINE_PATCHES=on but this image has no mistral-serve engine" \
            "plugin (build deploy/Dockerfile --target engine): vLLM runs unpatched" >&2
    fi
fi

if [ -n "${HUGGING_FACE_HUB_TOKEN:-}" ] && [ -z "${HF_TOKEN:-}" ]; then
    export HF_TOKEN="$HUGGING_FACE_HUB_TOKEN"
fi

# ENGINE_EXTRA_ARGS are shell words, as for `mistral-serve up` (quotes group words).
eval "set -- \"\$@\" ${ENGINE_EXTRA_ARGS:-}"
exec python3 -m vllm.entrypoints.openai.api_server "$@"
