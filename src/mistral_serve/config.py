"""Settings: every knob of mistral-serve, read once from the environment and `.env`.

Built once by the CLI (or a test) and passed down. The CLI is the one other reader of the
environment: it hands it on to the engines it starts (theirs is this process's, plus their
own), and tells GPU discovery which GPUs CUDA_VISIBLE_DEVICES leaves visible. Nothing else reads
it. `config/sample.env` documents each variable with its default; keep the two in step.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL_ID = "mistralai/Mistral-7B-Instruct-v0.1"
DNS_SCHEME = "dns"
#: vLLM's own `max_num_seqs` default for its API server on GPUs under 70 GiB.
DEFAULT_ENGINE_MAX_INFLIGHT = 256


def fair_headroom(target: int) -> int:
    """Requests an engine takes beyond the gateway's concurrency target, for a tenant below its
    fair share while another holds more than its own (admission/queue.py): an eighth of the
    target, at least one. Engines `up` starts take target + this (``--max-num-seqs``), so a
    quiet key's request starts at once even when a loud key fills every slot."""
    return max(1, target // 8)


@dataclass(frozen=True)
class DnsName:
    """A ``dns://name:port`` entry of ENGINE_URLS: every address ``name`` resolves to is an
    engine listening on ``port``."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{DNS_SCHEME}://{self.host}:{self.port}"


def parse_engine_entry(entry: str) -> str | DnsName:
    """One ENGINE_URLS entry: an ``http(s)://host[:port]`` engine URL (returned without a
    trailing slash) or a :class:`DnsName`. Raises ValueError for anything else."""
    parts = urlsplit(entry)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if parts.scheme == DNS_SCHEME:
        if not parts.hostname or port is None or parts.path.strip("/"):
            raise ValueError(f"{entry!r} is not a dns://name:port entry")
        return DnsName(parts.hostname, port)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{entry!r} is not an http(s)://host:port URL or dns://name:port")
    return entry.rstrip("/")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
    )

    # -- model -------------------------------------------------------------------------------
    # None means "not chosen": the default Mistral model on a GPU, the demo model without one.
    model_id: str | None = None
    served_model_name: str | None = None
    hugging_face_hub_token: SecretStr | None = None
    #: The fleet (models/fleet.py, config/models.example.yaml): several models, kinds and
    #: adapters under `up`. Unset: MODEL_ID and the engine variables describe a fleet of one.
    models_file: Path | None = None

    # -- engines -----------------------------------------------------------------------------
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    engine_replicas: int | Literal["auto"] = "auto"
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=16)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    engine_extra_args: str = ""
    # The project's vLLM plugin (engine_plugin/): version-guarded fixes of vLLM bugs, applied in
    # the engines `up` starts (and in the engine image). `off` runs vLLM as released.
    engine_patches: Literal["on", "off"] = "on"
    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    engine_start_timeout_s: float = Field(default=1800.0, gt=0)
    engine_read_timeout_s: float = Field(default=600.0, gt=0)
    engine_health_interval_s: float = Field(default=2.0, gt=0)
    # Engine state (docs/architecture.md, "Engine state"): requests in flight and no progress
    # for this long is a stall; an engine that neither answers nor progresses for it is down.
    engine_stall_timeout_s: float = Field(default=30.0, gt=0)
    # A stream whose engine fails after it began goes on from another engine of its model this
    # many times at most (gateway/migration.py); 0 ends it with an error event, as before.
    engine_migration_limit: int = Field(default=1, ge=0, le=10)
    # An idle engine proves it still generates with a one-token canary this often.
    engine_canary_interval_s: float = Field(default=30.0, gt=0)
    # How often each engine's /metrics is read (progress counters, load statistics).
    engine_stats_interval_s: float = Field(default=1.0, gt=0)
    # Outlier ejection: this many failed requests in a row (5xx, broken connections) take an
    # engine out for ENGINE_EJECT_BASE_S × (its ejection count), at most ENGINE_EJECT_MAX_S,
    # with no more than ENGINE_EJECT_MAX_PERCENT of the engines out at once (one always may be).
    engine_eject_after_failures: int = Field(default=5, ge=1)
    engine_eject_base_s: float = Field(default=30.0, gt=0)
    engine_eject_max_s: float = Field(default=300.0, gt=0)
    engine_eject_max_percent: float = Field(default=50.0, ge=0, le=100)
    # Traffic control (docs/routing.md). Requests one engine may have at once; unset: the
    # `--max-num-seqs` of ENGINE_EXTRA_ARGS, else 256. `up` and the container entrypoint start
    # engines with `--max-num-seqs` equal to it, so the engine runs every request it is given.
    engine_max_inflight: int | None = Field(default=None, ge=1)
    # Requests per model that wait in the gateway for a free engine, and for how long, before
    # the answer is 429 with Retry-After.
    admission_queue_max: int = Field(default=1024, ge=0)
    admission_queue_timeout_s: float = Field(default=30.0, gt=0)
    # prefix-load (prefix affinity within load limits), least-outstanding or round-robin.
    routing_policy: Literal["prefix-load", "least-outstanding", "round-robin"] = "prefix-load"
    # prefix-load's balance guard: affinity gives way when the preferred engine has this many
    # more requests in flight than the least loaded one AND this many times as many.
    routing_balance_abs: int = Field(default=4, ge=0)
    routing_balance_rel: float = Field(default=1.5, ge=1.0)
    # How often `dns://name:port` entries of ENGINE_URLS are looked up again.
    engine_dns_refresh_s: float = Field(default=5.0, gt=0)
    # `up` only: engine i listens on 127.0.0.1:(ENGINE_BASE_PORT + i), so a collector on the
    # host can scrape its /metrics. Unset: free ports.
    engine_base_port: int | None = Field(default=None, ge=1024, le=65535)
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "mistral-serve",
        validation_alias="MISTRAL_SERVE_CACHE_DIR",
    )
    # Hugging Face's own variables, read as vLLM reads them: where a hub id's snapshot is found
    # on this machine (FIM's tokenizer, the planner's sizes). See hub_cache.
    hf_hub_cache: Path | None = None
    hf_home: Path | None = None

    # -- tenancy (docs/tenancy.md) -------------------------------------------------------------
    # auto: an API key is required as soon as API_KEY is set or any key exists in the store;
    # required; off (anyone may call).
    auth: Literal["auto", "required", "off"] = "auto"
    # One static key, like vLLM's --api-key: clients send `Authorization: Bearer <it>`.
    api_key: SecretStr | None = None
    # The admin API (/admin/keys…) answers only `Authorization: Bearer <this>`; unset: it is off.
    admin_api_key: SecretStr | None = None
    # Where keys live: a SQLAlchemy URL (postgresql://… for fleets). Unset: SQLite in the data
    # folder.
    database_url: SecretStr | None = None
    data_dir: Path = Field(
        default=Path.home() / ".local" / "share" / "mistral-serve",
        validation_alias="MISTRAL_SERVE_DATA_DIR",
    )
    # A gateway re-reads changed keys this often: a revocation or change reaches every gateway
    # within it, with no database read per request.
    key_cache_ttl_s: float = Field(default=5.0, gt=0)
    # Where per-key limit counters live: redis://… shares them between every gateway process
    # and replica (one atomic script per request). Unset: in this process only.
    redis_url: SecretStr | None = None
    # When the limit counters cannot be reached: serve without limits (open) or refuse with
    # 503 (closed). Either way it is logged and counted.
    limits_on_store_error: Literal["open", "closed"] = "open"
    # Output tokens a request that sets no max_tokens reserves against its key's TPM and
    # budgets; it is charged what it really used when it ends.
    limits_reserve_output_tokens: int = Field(default=1024, ge=1)
    # The usage ledger writes its rows in batches: every this many seconds, or sooner when
    # this many rows wait.
    ledger_flush_interval_s: float = Field(default=1.0, gt=0)
    ledger_batch_rows: int = Field(default=500, ge=1)

    # -- the Responses API and conversations ---------------------------------------------------
    # Responses (and conversations) kept in the store (DATABASE_URL, else SQLite) so that any
    # gateway continues a chain; "off" makes `store: true` a 400 naming this setting.
    # Uploaded files (`/v1/files`: batch input, and the batches' output and error files): the
    # folder their bytes are kept in (unset: `files` in the data folder), and the largest one
    # an upload may be (OpenAI's limit for a batch input file, 200 MB).
    files_dir: Path | None = None
    files_max_bytes: int = Field(default=200 * 1000 * 1000, ge=1024)
    # Batch jobs run on idle engine slots only, and hold at most this share of a model's slots
    # (every gateway's batch requests counted), so interactive requests find the rest free.
    batch_max_share: float = Field(default=0.8, gt=0, le=1)
    # A gateway's claim on a batch request lasts this long and is renewed every third of it
    # while the request runs; a gateway killed mid-job leaves its requests to another after it.
    batch_lease_s: float = Field(default=30.0, ge=1)
    responses_store: Literal["on", "off"] = "on"
    # Stored responses and conversations are deleted this many days after they were made.
    responses_ttl_days: float = Field(default=30.0, gt=0)
    # A background response whose gateway wrote nothing for this long (it writes every half
    # second while running) is marked failed by another gateway: its gateway died.
    responses_lost_after_s: float = Field(default=30.0, ge=2)

    # -- gateway -----------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=1, le=65535)
    shutdown_timeout_s: float = Field(default=30.0, ge=0)
    # What the front door reads of one request before refusing it. Bodies: 413 from
    # Content-Length, or as soon as a chunked body passes it; unset, the larger of 8 MiB and
    # 32 bytes per token of the longest context the engines serve. Headers: 431 past the count
    # or their total size (Envoy's defaults).
    max_request_bytes: int | None = Field(default=None, ge=1024)
    # Gateway processes serving PORT together (api/workers.py). auto: 1 without GPUs (the CPU
    # engines need the cores), else one per 16 cores, 2 to 4. More than one needs REDIS_URL
    # unless AUTH=off: per-key limits are counted in one place.
    gateway_workers: int | Literal["auto"] = "auto"
    max_request_headers: int = Field(default=100, ge=8)
    max_request_header_bytes: int = Field(default=65536, ge=1024)

    # -- telemetry and logs ------------------------------------------------------------------
    # The standard OTEL_* names. No endpoint: telemetry is off (spans and metrics are no-ops).
    otel_exporter_otlp_endpoint: str | None = None
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] = "http/protobuf"
    # "key=value,key2=value2" (values URL-encoded), e.g. SigNoz Cloud's signoz-ingestion-key.
    otel_exporter_otlp_headers: SecretStr | None = None
    otel_service_name: str = Field(default="mistral-serve", min_length=1)
    # "key=value,…" added to every signal's resource, e.g. deployment.environment.name=prod.
    otel_resource_attributes: str = ""
    otel_metric_export_interval: int = Field(default=60000, ge=100)  # milliseconds
    otel_sdk_disabled: bool = False
    # Prompt and completion text in spans only when this is true.
    otel_instrumentation_genai_capture_message_content: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator(
        "model_id",
        "served_model_name",
        "hugging_face_hub_token",
        "gpu_memory_utilization",
        "max_model_len",
        "engine_base_port",
        "engine_max_inflight",
        "max_request_bytes",
        "api_key",
        "admin_api_key",
        "database_url",
        "redis_url",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_headers",
        "hf_hub_cache",
        "hf_home",
        "files_dir",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`MODEL_ID=` in .env means "not set", as sample.env shows it."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cache_dir", "data_dir", "hf_hub_cache", "hf_home", "files_dir")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("engine_replicas", "gateway_workers", mode="before")
    @classmethod
    def _replicas(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            if value in ("", "auto"):
                return "auto"
            if not value.isdigit() or int(value) < 1:
                raise ValueError("must be 'auto' or a whole number of at least 1")
            return int(value)
        if isinstance(value, int) and value < 1:
            raise ValueError("must be 'auto' or a whole number of at least 1")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("dtype", "log_format", "otel_exporter_otlp_protocol", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            return value
        for entry in value:
            parse_engine_entry(str(entry))  # raises ValueError, which pydantic reports
        return [str(entry).rstrip("/") for entry in value]

    @field_validator("otel_exporter_otlp_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s)://host:port URL, e.g. http://localhost:4318")
        return value.strip().rstrip("/")

    @field_validator("otel_exporter_otlp_headers", "otel_resource_attributes")
    @classmethod
    def _key_values(cls, value: SecretStr | str | None) -> SecretStr | str | None:
        parse_key_values(value.get_secret_value() if isinstance(value, SecretStr) else value or "")
        return value

    @property
    def hub_cache(self) -> Path:
        """The Hugging Face hub cache: HF_HUB_CACHE, else HF_HOME/hub, else its default."""
        if self.hf_hub_cache is not None:
            return self.hf_hub_cache
        home = self.hf_home if self.hf_home is not None else Path.home() / ".cache" / "huggingface"
        return home / "hub"

    @property
    def telemetry_enabled(self) -> bool:
        return self.otel_exporter_otlp_endpoint is not None and not self.otel_sdk_disabled

    @field_validator("engine_extra_args")
    @classmethod
    def _shell_words(cls, value: str) -> str:
        try:
            shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be split into arguments: {exc}") from exc
        return value

    @property
    def engine_extra_argv(self) -> list[str]:
        return shlex.split(self.engine_extra_args)

    @property
    def files_path(self) -> Path:
        """FILES_DIR, else ``files`` in the data folder."""
        return self.files_dir if self.files_dir is not None else self.data_dir / "files"

    @property
    def engine_max_num_seqs(self) -> int:
        """The engines' batch (``--max-num-seqs``): the target plus its fair headroom."""
        target = self.engine_concurrency_target
        return target + fair_headroom(target)

    @property
    def engine_concurrency_target(self) -> int:
        """ENGINE_MAX_INFLIGHT, else the engines' own ``--max-num-seqs``, else 256."""
        if self.engine_max_inflight is not None:
            return self.engine_max_inflight
        target = DEFAULT_ENGINE_MAX_INFLIGHT
        argv = self.engine_extra_argv
        for index, word in enumerate(argv):  # the last one wins, as in vLLM's argparse
            flag, _, value = word.partition("=")
            if flag != "--max-num-seqs":
                continue
            if not value and index + 1 < len(argv):
                value = argv[index + 1]
            if value.isdigit():
                target = int(value)
        return target


def parse_key_values(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` as the OTEL_* variables write it (values may be URL-encoded)."""
    pairs: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("must be key=value pairs separated by commas")
        pairs[key.strip()] = unquote(value.strip())
    return pairs


#: Settings whose given value is never repeated in an error message.
_SECRET_WORDS = ("token", "headers", "key", "database_url", "redis_url")
_ALIASES = {"cache_dir": "MISTRAL_SERVE_CACHE_DIR", "data_dir": "MISTRAL_SERVE_DATA_DIR"}


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad variable and why, e.g. ``PORT: Input should be a valid integer``.

    The value given is shown, except for secrets.
    """
    problems = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "settings"
        name = _ALIASES.get(field, field.upper())
        reason = error["msg"].removeprefix("Value error, ")
        given = error.get("input")
        secret = any(word in field for word in _SECRET_WORDS)
        shown = "" if secret or given is None or isinstance(given, dict) else f" (got {given!r})"
        problems.append(f"{name}: {reason}{shown}")
    return "; ".join(problems)
