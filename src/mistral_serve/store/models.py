"""The tables, as SQLAlchemy declares them. Migrations (store/migrations/) create them; the
models are what queries are written against."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


#: A wall clock: what time it is, as an aware UTC datetime. Passed in wherever a time is
#: stamped or compared (a test's fixed date stays true next year); :func:`utc_now` is the real one.
WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    """The real wall clock, in UTC."""
    return datetime.now(UTC)


def utc(moment: datetime | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite gives them back naive)."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class ApiKey(Base):
    """One API key: its public id, the SHA-256 of its secret, and what it may do."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Limits; None is unlimited.
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    tokens_per_day: Mapped[int | None] = mapped_column(BigInteger)
    tokens_per_month: Mapped[int | None] = mapped_column(BigInteger)
    #: Model names it may use; None is every model.
    models: Mapped[list[str] | None] = mapped_column(JSON)
    #: The admission queue's order for its requests (lower first, as vLLM's priority).
    priority: Mapped[int] = mapped_column(Integer, default=0)
    #: Its share of turns within its priority, relative to other keys (admission/fairness.py).
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")


class UsageEntry(Base):
    """One request in the usage ledger. ``id`` is the row's own (the client may reuse a
    request id); writing a row twice keeps one."""

    __tablename__ = "usage"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128))
    key_id: Mapped[str] = mapped_column(String(32))  # "" when no key was required
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(64))
    engine: Mapped[str | None] = mapped_column(String(64))
    streamed: Mapped[bool] = mapped_column(Boolean)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    #: The engine did not report usage (the client left): the counts are the gateway's estimate.
    usage_estimated: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64))
    finish_reason: Mapped[str | None] = mapped_column(String(32))
    duration_ms: Mapped[int] = mapped_column(Integer)
    ttft_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: The batch job it ran for, if any.
    batch_id: Mapped[str | None] = mapped_column(String(64))


class UsageTotal(Base):
    """Running totals per key, model and UTC day, added to once per ledger flush."""

    __tablename__ = "usage_totals"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    requests: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)


class LoraAdapter(Base):
    """A LoRA adapter added at run time (`/admin/adapters`): every gateway loads it on every
    engine of its base, restarted and new ones included."""

    __tablename__ = "lora_adapters"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    base: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StoredResponseRow(Base):
    """A stored response (the Responses API): its own input items, the response object as
    the client saw it last, and the response before it in its chain. ``key_id`` owns it
    ("" when no key is required); ``runner`` is the gateway running it in the background."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    #: The chain's first response: the routing session of every response in it.
    root_id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    input_items: Mapped[list[dict]] = mapped_column(JSON)
    response: Mapped[dict] = mapped_column(JSON)
    runner: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ResponseEventRow(Base):
    """One streamed event of a background response, for a client that resumes its stream."""

    __tablename__ = "response_events"

    response_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(Integer, primary_key=True)
    event: Mapped[dict] = mapped_column(JSON)


class ConversationRow(Base):
    """A conversation: OpenAI's (``/v1/conversations``, items) or Mistral's
    (``beta.conversations``, entries); ``settings`` holds what Mistral's keeps (model,
    instructions, tools, completion arguments, name, description)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    dialect: Mapped[str] = mapped_column(String(8))  # "openai" or "mistral"
    metadata_: Mapped[dict] = mapped_column("metadata", JSON)
    settings: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversationItemRow(Base):
    """One item of a conversation, at its position (0 first)."""

    __tablename__ = "conversation_items"

    conversation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(64))
    item: Mapped[dict] = mapped_column(JSON)


class StoredFileRow(Base):
    """An uploaded file (``/v1/files``): what is known of it; its bytes are in FILES_DIR under
    its id."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), index=True)  # "" when no key is required
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchJobRow(Base):
    """A batch job (OpenAI's ``/v1/batches`` or Mistral's ``/v1/batch/jobs``): what it runs,
    its state and the moments it reached each, its output files once written. Its requests'
    counts are read from its rows (:class:`BatchRequestRow`), never kept twice."""

    __tablename__ = "batch_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))  # "" when no key is required
    api: Mapped[str] = mapped_column(String(8))  # "openai" or "mistral": the object's shape
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    input_files: Mapped[list[str]] = mapped_column(JSON)
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON)
    output_file_id: Mapped[str | None] = mapped_column(String(64))
    error_file_id: Mapped[str | None] = mapped_column(String(64))
    total: Mapped[int] = mapped_column(Integer)
    #: Why it waits (its key's budget ran out, say), and until when it is not tried again.
    paused: Mapped[str | None] = mapped_column(String(300))
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The job span's W3C traceparent: every request's span is its child, on any gateway.
    trace_parent: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    in_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finalizing_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelling_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchRequestRow(Base):
    """One request of a batch job, at its line of the input: its body, whose claim it is
    under until when (a gateway running it), and its result once it has one."""

    __tablename__ = "batch_requests"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    custom_id: Mapped[str] = mapped_column(String(512))
    body: Mapped[dict] = mapped_column(JSON)
    #: Its prompt's routing key (hex): the job's requests run in this order, so those that
    #: share a prefix reach the engines together.
    route_key: Mapped[str] = mapped_column(String(96))
    state: Mapped[str] = mapped_column(String(10))
    claim: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    #: The output line's ``response`` body or ``error`` object.
    result: Mapped[dict | None] = mapped_column(JSON)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
