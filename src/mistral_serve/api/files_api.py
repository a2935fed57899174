"""``/v1/files…``: uploads (multipart: ``file`` and ``purpose``), their list, each file's
record, its bytes, and its deletion, for OpenAI's and Mistral's SDKs alike
(:mod:`mistral_serve.batch.files`). A file belongs to the key that uploaded it."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, Response

from mistral_serve.api.responses import json_response
from mistral_serve.batch.files import Files
from mistral_serve.errors import InvalidRequestError

router = APIRouter()

#: Fields besides the file an upload may carry (purpose, and what SDKs add).
_MAX_FIELDS = 16


def _files(request: Request) -> Files:
    return request.app.state.services.files


async def _owner(request: Request) -> str:
    gateway = request.app.state.services.gateway
    caller = await gateway.authenticate(request.headers.get("authorization"))
    return caller.owner


@router.post("/v1/files", response_model=None)
async def upload_file(request: Request) -> Response:
    """A file to keep (``purpose``: ``batch``), as OpenAI's ``files.create`` and Mistral's
    ``files.upload`` send it."""
    owner = await _owner(request)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequestError("Upload the file as multipart/form-data.", param="file")
    try:
        form = await request.form(max_files=1, max_fields=_MAX_FIELDS)
    except Exception as exc:  # the multipart parser's own complaints are the client's
        raise InvalidRequestError(f"The multipart body could not be read: {exc}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("file: the upload needs a `file` part.", param="file")
        purpose = form.get("purpose")
        answer = await _files(request).upload(
            owner, upload.file, upload.filename, purpose if isinstance(purpose, str) else None
        )
    finally:
        await form.close()
    return json_response(answer)


@router.get("/v1/files")
async def list_files(request: Request) -> Response:
    """OpenAI's cursor pages (``after``, ``limit``, ``order``) and Mistral's numbered ones
    (``page``, ``page_size``); ``purpose`` filters either."""
    query = request.query_params
    try:
        limit = int(query.get("page_size") or query.get("limit") or 100)
        page = int(query.get("page") or 0)
    except ValueError:
        raise InvalidRequestError("limit, page and page_size: integers.", param="limit") from None
    if not 1 <= limit <= 10_000 or page < 0:
        raise InvalidRequestError("limit: 1 to 10000; page: 0 or more.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("order: asc or desc.", param="order")
    listed = await _files(request).list(
        await _owner(request),
        purpose=query.get("purpose"),
        after=query.get("after"),
        limit=limit,
        page=page,
        newest_first=order == "desc",
    )
    return json_response(listed)


@router.get("/v1/files/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> Response:
    return json_response(await _files(request).retrieve(await _owner(request), file_id))


@router.get("/v1/files/{file_id}/content", response_model=None)
async def file_content(request: Request, file_id: str) -> Response:
    """The file's bytes, as uploaded (or as a batch wrote them)."""
    path = await _files(request).content(await _owner(request), file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=f"{file_id}.jsonl")


@router.delete("/v1/files/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    return json_response(await _files(request).delete(await _owner(request), file_id))
