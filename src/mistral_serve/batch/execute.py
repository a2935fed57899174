"""How one batch request runs: through the gateway's pipeline as its job's key, after every
interactive request (chat, completions, FIM, embeddings), or through the Responses API for
``/v1/responses`` jobs; its answer is the request's result."""

from __future__ import annotations

from mistral_serve.batch.lines import endpoint_of
from mistral_serve.batch.output import request_id
from mistral_serve.batch.runner import Execute
from mistral_serve.gateway.pipeline import Endpoint, Gateway, validated
from mistral_serve.gateway.responses import GatewayResponse
from mistral_serve.protocol.openai_responses import ResponseRequest
from mistral_serve.responses.service import Responses
from mistral_serve.store.batches import BatchJob, ClaimedRequest
from mistral_serve.tenancy.auth import Caller


def executor(gateway: Gateway, responses: Responses | None) -> Execute:
    async def execute(caller: Caller, job: BatchJob, request: ClaimedRequest) -> GatewayResponse:
        endpoint = endpoint_of(job.endpoint)
        run_id = request_id(job.id, request.line)
        if endpoint is Endpoint.RESPONSES and responses is not None:
            asked: ResponseRequest = validated(ResponseRequest, request.body)
            return await responses.create_for(caller, asked, run_id, batch_id=job.id)
        return await gateway.generate_batch(caller, endpoint, request.body, run_id, batch_id=job.id)

    return execute
