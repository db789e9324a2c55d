"""The gRPC front end (package braid.v1): an asyncio servicer that translates messages to and from the core.

Every method does the same four things: check the API key from the call's metadata, take the call's deadline
(``context.time_remaining()``), run the core operation, and map a failure to its status code with the message
(:func:`braid.service.errors.status_of`). Internal errors answer INTERNAL without details; the traceback goes to the
log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import json_format

from braid.pipelines.pipeline import ExplainedHit
from braid.proto.braid.v1 import braid_pb2 as pb
from braid.proto.braid.v1 import braid_pb2_grpc
from braid.service.core import CoreBase, NewDocument, SearchAnswer, SearchQuery, api_key_from
from braid.service.errors import status_of

log = logging.getLogger(__name__)


def api_key_of(metadata: Any) -> str | None:
    values = dict(metadata or ())
    return api_key_from(values.get("authorization"), values.get("x-api-key"))


def query_from(request: pb.SearchRequest) -> SearchQuery:
    return SearchQuery(
        query=request.query,
        k=request.k,
        pipeline=request.pipeline,
        weights=dict(request.weights) or None,
        rerank_depth=request.rerank_depth if request.HasField("rerank_depth") else None,
        explain=request.explain,
        filter=json_format.MessageToDict(request.filter) if request.HasField("filter") else None,
    )


def hit_message(rank: int, hit: ExplainedHit, explain: bool) -> pb.Hit:
    message = pb.Hit(doc_id=hit.doc_id, score=hit.score, rank=rank, passage=hit.passage or "")
    if explain:
        explanation = message.explanation
        for name, source in hit.sources.items():
            entry = explanation.retrievers[name]
            if source.rank is not None:
                entry.rank = source.rank
            if source.score is not None:
                entry.score = source.score
            if source.contribution is not None:
                entry.contribution = source.contribution
        if hit.fused_score is not None:
            explanation.fused_score = hit.fused_score
        explanation.stages.update(hit.stages)
    return message


def answer_message(answer: SearchAnswer, explain: bool, kind: type = pb.SearchResponse) -> Any:
    return kind(
        pipeline=answer.pipeline,
        hits=[hit_message(rank, hit, explain) for rank, hit in enumerate(answer.hits, 1)],
        timings_ms=answer.timings_ms,
    )


def pipeline_message(info: dict[str, Any]) -> pb.PipelineInfo:
    return pb.PipelineInfo(
        **{key: value for key, value in info.items() if key != "indexes"},
        indexes=[pb.IndexInfo(**index) for index in info["indexes"]],
    )


def document_message(document: NewDocument) -> pb.Document:
    message = pb.Document(id=document.id, text=document.text, title=document.title)
    if document.metadata:
        message.metadata.update(document.metadata)
    return message


def collection_message(status: dict[str, Any]) -> pb.CollectionStatus:
    writes = [pb.WriteSummary(**write) for write in status["recent_writes"]]
    return pb.CollectionStatus(**{**status, "recent_writes": writes})


def documents_from(documents: Any) -> list[NewDocument]:
    return [
        NewDocument(doc.id, doc.text, doc.title, json_format.MessageToDict(doc.metadata) or None) for doc in documents
    ]


class BraidServicer(braid_pb2_grpc.BraidServicer):
    def __init__(self, core: CoreBase) -> None:
        self.core = core

    async def _run(self, method: str, context: grpc.aio.ServicerContext, write: bool, work: Callable) -> Any:
        tick = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            self.core.authorize(api_key_of(context.invocation_metadata()), write)
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            return await self.core.call(work, deadline)
        except asyncio.CancelledError:  # the client went away; its work still finishes and frees its slot
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as error:
            code, _ = status_of(error)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
                message = "internal error; the server log has the details"
            else:
                message = str(error)
        finally:
            self.core.metrics.requests.labels("grpc", method, code.name).inc()
            self.core.metrics.latency.labels("grpc", method).observe(time.perf_counter() - tick)
        await context.abort(code, message)

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        query = query_from(request)
        answer = await self._run("Search", context, False, lambda deadline: self.core.search(query, deadline))
        return answer_message(answer, query.explain)

    async def BatchSearch(self, request: pb.BatchSearchRequest, context) -> pb.BatchSearchResponse:
        queries = [query_from(item) for item in request.requests]
        answers = await self._run(
            "BatchSearch", context, False, lambda deadline: self.core.batch_search(queries, deadline)
        )
        return pb.BatchSearchResponse(
            responses=[answer_message(a, q.explain) for a, q in zip(answers, queries, strict=True)]
        )

    async def Rerank(self, request: pb.RerankRequest, context) -> pb.RerankResponse:
        documents = documents_from(request.documents)
        answer = await self._run(
            "Rerank",
            context,
            False,
            lambda deadline: self.core.rerank(request.query, documents, request.pipeline, deadline),
        )
        return answer_message(answer, False, pb.RerankResponse)

    async def ListPipelines(self, request: pb.ListPipelinesRequest, context) -> pb.ListPipelinesResponse:
        infos, status = await self._run(
            "ListPipelines", context, False, lambda _: (self.core.list_pipelines(), self.core.collection_status())
        )
        return pb.ListPipelinesResponse(
            pipelines=[pipeline_message(info) for info in infos],
            default_pipeline=self.core.default_pipeline,
            collection=collection_message(status),
        )

    async def GetDocuments(self, request: pb.GetDocumentsRequest, context) -> pb.GetDocumentsResponse:
        ids = list(request.ids)
        documents = await self._run(
            "GetDocuments", context, False, lambda deadline: self.core.get_documents(request.pipeline, ids, deadline)
        )
        return pb.GetDocumentsResponse(documents=[document_message(document) for document in documents])

    async def _update(self, method: str, context, work: Callable[[float], tuple[int, int]]) -> pb.UpdateResponse:
        """A write, run as ``method`` (a key needed): its (doc count, generation) as the response."""
        count, generation = await self._run(method, context, True, work)
        return pb.UpdateResponse(doc_count=count, generation=generation)

    async def AddDocuments(self, request: pb.AddDocumentsRequest, context) -> pb.UpdateResponse:
        documents = documents_from(request.documents)
        return await self._update(
            "AddDocuments", context, lambda deadline: self.core.add_documents(request.pipeline, documents, deadline)
        )

    async def UpsertDocuments(self, request: pb.AddDocumentsRequest, context) -> pb.UpdateResponse:
        documents = documents_from(request.documents)
        return await self._update(
            "UpsertDocuments",
            context,
            lambda deadline: self.core.upsert_documents(request.pipeline, documents, deadline),
        )

    async def DeleteDocuments(self, request: pb.DeleteDocumentsRequest, context) -> pb.UpdateResponse:
        ids = list(request.ids)
        return await self._update(
            "DeleteDocuments", context, lambda deadline: self.core.delete_documents(request.pipeline, ids, deadline)
        )

    async def Reload(self, request: pb.ReloadRequest, context) -> pb.ReloadResponse:
        infos = await self._run("Reload", context, True, lambda _: self.core.reload(request.pipeline))
        return pb.ReloadResponse(pipelines=[pipeline_message(info) for info in infos])
