"""Batch jobs' routes: OpenAI's ``/v1/batches…`` and Mistral's ``/v1/batch/jobs…``, thin
adapters to :class:`~mistral_serve.batch.service.Batches` (docs/batch.md)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from starlette.responses import Response

from mistral_serve.api.responses import json_response
from mistral_serve.batch.service import Batches
from mistral_serve.errors import InvalidRequestError
from mistral_serve.gateway.pipeline import decode_body
from mistral_serve.tenancy.auth import Caller

router = APIRouter()


def _batches(request: Request) -> Batches:
    return request.app.state.services.batches


async def _caller(request: Request) -> Caller:
    gateway = request.app.state.services.gateway
    return await gateway.authenticate(request.headers.get("authorization"))


def _integer(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError:
        raise InvalidRequestError(f"{name}: an integer.", param=name) from None


# -- OpenAI's ---------------------------------------------------------------------------------
@router.post("/v1/batches")
async def create_batch(request: Request) -> Response:
    """A batch of requests from an uploaded file, run on the engines' idle capacity."""
    caller = await _caller(request)
    body = decode_body(await request.body())
    return json_response(await _batches(request).create_openai(caller, body))


@router.get("/v1/batches")
async def list_batches(request: Request) -> Response:
    """The key's batches, newest first (``after``, ``limit``)."""
    caller = await _caller(request)
    listed = await _batches(request).list_openai(
        caller, after=request.query_params.get("after"), limit=_integer(request, "limit", 20)
    )
    return json_response(listed)


@router.get("/v1/batches/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    return json_response(await _batches(request).retrieve_openai(await _caller(request), batch_id))


@router.post("/v1/batches/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    return json_response(await _batches(request).cancel_openai(await _caller(request), batch_id))


# -- Mistral's --------------------------------------------------------------------------------
@router.post("/v1/batch/jobs")
async def create_batch_job(request: Request) -> Response:
    """A batch job from input files or inline requests."""
    caller = await _caller(request)
    body = decode_body(await request.body())
    return json_response(await _batches(request).create_mistral(caller, body))


@router.get("/v1/batch/jobs")
async def list_batch_jobs(request: Request) -> Response:
    """The key's jobs, newest first (``page``, ``page_size``; ``model``, ``status``,
    ``created_after``, ``metadata`` filter them)."""
    caller = await _caller(request)
    query = request.query_params
    created_after = None
    if query.get("created_after"):
        try:
            created_after = datetime.fromisoformat(query["created_after"])
        except ValueError:
            raise InvalidRequestError(
                "created_after: an ISO 8601 date and time.", param="created_after"
            ) from None
    metadata = None
    if query.get("metadata"):
        metadata = decode_body(query["metadata"].encode())
    listed = await _batches(request).list_mistral(
        caller,
        page=_integer(request, "page", 0),
        page_size=_integer(request, "page_size", 100),
        model=query.get("model"),
        statuses=query.getlist("status") or None,
        created_after=created_after,
        metadata=metadata,
    )
    return json_response(listed)


@router.get("/v1/batch/jobs/{job_id}")
async def retrieve_batch_job(request: Request, job_id: str) -> Response:
    """A job; ``inline=true`` adds its output lines (``outputs``)."""
    inline = request.query_params.get("inline", "false").lower() == "true"
    caller = await _caller(request)
    return json_response(await _batches(request).retrieve_mistral(caller, job_id, inline=inline))


@router.post("/v1/batch/jobs/{job_id}/cancel")
async def cancel_batch_job(request: Request, job_id: str) -> Response:
    return json_response(await _batches(request).cancel_mistral(await _caller(request), job_id))
