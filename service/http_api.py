"""The HTTP front end: a FastAPI app over the same core, with the same operations, errors and limits as gRPC.

Errors answer ``{"error": {"status": "INVALID_ARGUMENT", "message": ...}}`` with the HTTP status of
:func:`service.errors.status_of`; a body that does not match the schema answers 422 (FastAPI's validation). The
OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``, Prometheus metrics at ``/metrics``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from eval.errors import BraidError
from retriever.pipeline import ExplainedHit
from service.core import NewDocument, SearchAnswer, SearchCore, SearchQuery
from service.errors import TooLarge, status_of
from service.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchBody(_Strict):
    query: str = Field(description="query text")
    k: int = Field(10, ge=1, description="number of hits")
    pipeline: str = Field("", description="pipeline name; empty: the server's default")
    weights: dict[str, float] | None = Field(None, description="fusion weights for this request, by retriever name")
    rerank_depth: int | None = Field(None, ge=0, description="rerank depth for this request; 0 skips reranking")
    explain: bool = Field(False, description="include each hit's provenance")


class BatchBody(_Strict):
    requests: list[SearchBody]


class DocumentBody(_Strict):
    id: str
    text: str
    title: str = ""


class RerankBody(_Strict):
    query: str
    documents: list[DocumentBody]
    pipeline: str = ""


class AddBody(_Strict):
    documents: list[DocumentBody]


class DeleteBody(_Strict):
    ids: list[str]


class ReloadBody(_Strict):
    pipeline: str = Field("", description="pipeline to reload; empty: all")


class RetrieverScore(BaseModel):
    rank: int | None
    score: float | None


class Explanation(BaseModel):
    retrievers: dict[str, RetrieverScore]
    fused_score: float | None
    stages: dict[str, float]


class HitModel(BaseModel):
    rank: int
    doc_id: str
    score: float
    explanation: Explanation | None = None


class SearchResult(BaseModel):
    pipeline: str
    hits: list[HitModel]
    timings_ms: dict[str, float]


class BatchResult(BaseModel):
    responses: list[SearchResult]


class IndexModel(BaseModel):
    path: str
    kind: str
    doc_count: int
    bytes: int
    created_at: str
    braid_version: str


class PipelineModel(BaseModel):
    name: str
    description: str
    retrievers: list[str]
    fusion: str
    weights: dict[str, float]
    rerank: bool
    updatable: bool
    doc_count: int
    indexes: list[IndexModel]
    generation: int


class PipelineList(BaseModel):
    pipelines: list[PipelineModel]
    default_pipeline: str


class UpdateResult(BaseModel):
    doc_count: int
    generation: int


class ErrorDetail(BaseModel):
    status: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _finite(value: float) -> float:
    # JSON has no NaN or infinity; a score never is one, but a bug must not make the response unparseable.
    return value if math.isfinite(value) else 0.0


def _hit(rank: int, hit: ExplainedHit, explain: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"rank": rank, "doc_id": hit.doc_id, "score": _finite(hit.score)}
    if explain:
        row["explanation"] = {
            "retrievers": {name: {"rank": s.rank, "score": s.score} for name, s in hit.sources.items()},
            "fused_score": hit.fused_score,
            "stages": hit.stages,
        }
    return row


def _answer(answer: SearchAnswer, explain: bool) -> dict[str, Any]:
    return {
        "pipeline": answer.pipeline,
        "hits": [_hit(rank, hit, explain) for rank, hit in enumerate(answer.hits, 1)],
        "timings_ms": answer.timings_ms,
    }


def _query(body: SearchBody) -> SearchQuery:
    return SearchQuery(body.query, body.k, body.pipeline, body.weights, body.rerank_depth, body.explain)


def _documents(items: list[DocumentBody]) -> list[NewDocument]:
    return [NewDocument(doc.id, doc.text, doc.title) for doc in items]


def _api_key(authorization: str | None, x_api_key: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key.strip() if x_api_key else None


def _deadline(timeout_ms: str | None) -> float | None:
    if timeout_ms is None:
        return None
    try:
        value = float(timeout_ms)
    except ValueError:
        raise BraidError(f"X-Request-Timeout-Ms must be a number of milliseconds, got {timeout_ms!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise BraidError(f"X-Request-Timeout-Ms must be > 0, got {timeout_ms!r}")
    return time.monotonic() + value / 1000


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes (413) before they are read into memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            too_big = not declared.isdigit() or int(declared) > self.limit
            if too_big:
                status = 413 if declared.isdigit() else 400
                problem = f"request body over {self.limit} bytes" if status == 413 else "invalid Content-Length"
                response = JSONResponse(
                    {"error": {"status": "INVALID_ARGUMENT", "message": problem}}, status_code=status
                )
                return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise TooLarge(f"request body over {self.limit} bytes")
            return message

        return await self.app(scope, limited, send)


Key = Annotated[str | None, Header(description="Bearer <API key>")]
ApiKey = Annotated[str | None, Header(alias="X-API-Key", description="the API key (alternative to Authorization)")]
Timeout = Annotated[
    str | None, Header(alias="X-Request-Timeout-Ms", description="deadline of this request, in milliseconds")
]
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 429, 503, 504)}


def create_app(core: SearchCore) -> FastAPI:
    """The HTTP API over ``core``."""
    app = FastAPI(
        title="braid",
        version="1",
        description="Hybrid retrieval and ranking: the HTTP face of the braid.v1 gRPC API.",
    )
    app.add_middleware(BodyLimit, limit=core.limits.max_request_bytes)
    state = {"draining": False}
    app.state.braid = state

    @app.exception_handler(BraidError)
    async def braid_error(request: Request, error: BraidError) -> JSONResponse:
        code, status = status_of(error)
        return JSONResponse({"error": {"status": code.name, "message": str(error)}}, status_code=status)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("HTTP %s %s failed", request.method, request.url.path)
        body = {"error": {"status": "INTERNAL", "message": "internal error; the server log has the details"}}
        return JSONResponse(body, status_code=500)

    async def run(method: str, write: bool, key: str | None, timeout: str | None, work: Callable) -> Any:
        tick = time.perf_counter()
        status = 200
        try:
            core.authorize(key, write)
            return await core.call(work, _deadline(timeout))
        except Exception as error:
            status = status_of(error)[1]
            raise
        finally:
            core.metrics.requests.labels("http", method, str(status)).inc()
            core.metrics.latency.labels("http", method).observe(time.perf_counter() - tick)

    @app.post("/v1/search", response_model=SearchResult, responses=ERRORS)
    async def search(
        body: SearchBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        query = _query(body)
        answer = await run(
            "Search", False, _api_key(authorization, x_api_key), timeout, lambda d: core.search(query, d)
        )
        return _answer(answer, body.explain)

    @app.post("/v1/batch-search", response_model=BatchResult, responses=ERRORS)
    async def batch_search(
        body: BatchBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        queries = [_query(item) for item in body.requests]
        answers = await run(
            "BatchSearch",
            False,
            _api_key(authorization, x_api_key),
            timeout,
            lambda d: core.batch_search(queries, d),
        )
        return {"responses": [_answer(a, q.explain) for a, q in zip(answers, queries, strict=True)]}

    @app.post("/v1/rerank", response_model=SearchResult, responses=ERRORS)
    async def rerank(
        body: RerankBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        documents = _documents(body.documents)
        answer = await run(
            "Rerank",
            False,
            _api_key(authorization, x_api_key),
            timeout,
            lambda d: core.rerank(body.query, documents, body.pipeline, d),
        )
        return _answer(answer, False)

    @app.get("/v1/pipelines", response_model=PipelineList, responses=ERRORS)
    async def pipelines(authorization: Key = None, x_api_key: ApiKey = None) -> dict:
        infos = await run(
            "ListPipelines", False, _api_key(authorization, x_api_key), None, lambda _: core.list_pipelines()
        )
        return {"pipelines": infos, "default_pipeline": core.registry.default}

    @app.post("/v1/pipelines/{name}/documents", response_model=UpdateResult, responses=ERRORS)
    async def add(name: str, body: AddBody, authorization: Key = None, x_api_key: ApiKey = None) -> dict:
        documents = _documents(body.documents)
        count, generation = await run(
            "AddDocuments",
            True,
            _api_key(authorization, x_api_key),
            None,
            lambda _: core.add_documents(name, documents),
        )
        return {"doc_count": count, "generation": generation}

    @app.post("/v1/pipelines/{name}/documents/delete", response_model=UpdateResult, responses=ERRORS)
    async def delete(name: str, body: DeleteBody, authorization: Key = None, x_api_key: ApiKey = None) -> dict:
        count, generation = await run(
            "DeleteDocuments",
            True,
            _api_key(authorization, x_api_key),
            None,
            lambda _: core.delete_documents(name, body.ids),
        )
        return {"doc_count": count, "generation": generation}

    @app.post("/v1/reload", response_model=PipelineList, responses=ERRORS)
    async def reload(body: ReloadBody, authorization: Key = None, x_api_key: ApiKey = None) -> dict:
        infos = await run(
            "Reload", True, _api_key(authorization, x_api_key), None, lambda _: core.reload(body.pipeline)
        )
        return {"pipelines": infos, "default_pipeline": core.registry.default}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz() -> Response:
        if state["draining"]:
            body = {"error": {"status": "UNAVAILABLE", "message": "shutting down"}}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(core.metrics.render(), media_type=CONTENT_TYPE)

    return app
