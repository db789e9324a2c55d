"""The HTTP front end: a FastAPI app over the same core, with the same operations, errors and limits as gRPC.

Every error answers braid's one error object, ``{"error": {"status": "INVALID_ARGUMENT", "message": ...}}``, with the
HTTP status of :func:`braid.service.errors.status_of`; a request that does not match the schema (a field, a header, a
body that is not JSON at all) answers 422, an unknown route 404 and a wrong method 405 in the same object. The OpenAPI
schema at ``/openapi.json`` declares every header's type, every error status and every content type served
(``/metrics`` is Prometheus text); interactive docs at ``/docs``.
"""

import logging
import math
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from braid.common.errors import BraidError
from braid.pipelines.pipeline import ExplainedHit
from braid.service.core import CoreBase, NewDocument, SearchAnswer, SearchQuery, api_key_from
from braid.service.errors import TooLarge, status_of
from braid.service.limits import ServiceLimits
from braid.service.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


# "Holds a character that is not whitespace", spelled as one explicit class: JSON Schema's ECMA-262 ``\\s``, Python's
# and pydantic's (Rust) disagree on a few characters (U+0085, U+001C-U+001F, U+FEFF), so a client generating ids
# from the schema and this server would disagree on what a blank id is. The class is the union of all three.
NOT_BLANK = "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def request_models(limits: ServiceLimits, pipelines: list[str], retrievers: list[str]) -> SimpleNamespace:
    """Request bodies whose schema states the server's limits and pipeline names, so that the OpenAPI document
    says what is accepted (a value beyond them answers 422 from the schema, never a surprise 400)."""
    pipeline_name = Literal[tuple(["", *pipelines])]  # "" is the default pipeline
    query_text = Annotated[str, Field(min_length=1, max_length=limits.max_query_chars, description="query text")]
    doc_id = Annotated[str, Field(min_length=1, max_length=512, pattern=NOT_BLANK)]
    retriever_name = Literal[tuple(retrievers)] if retrievers else str  # any served pipeline's retrievers

    class SearchBody(_Strict):
        query: query_text
        k: int = Field(10, ge=1, le=limits.max_k, description="number of hits")
        pipeline: pipeline_name = Field("", description="pipeline name; empty: the server's default")
        weights: dict[retriever_name, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
            None, description="fusion weights for this request, by retriever name (of the pipeline asked)"
        )
        rerank_depth: int | None = Field(None, ge=0, description="rerank depth for this request; 0 skips reranking")
        explain: bool = Field(False, description="include each hit's provenance")

    class BatchBody(_Strict):
        requests: list[SearchBody] = Field(min_length=1, max_length=limits.max_batch)

    class DocumentBody(_Strict):
        id: doc_id
        text: str = Field(max_length=limits.max_document_chars)
        title: str = Field("", max_length=limits.max_document_chars)

    class RerankBody(_Strict):
        query: query_text
        documents: list[DocumentBody] = Field(min_length=1, max_length=limits.max_rerank_documents)
        pipeline: pipeline_name = Field("", description="a pipeline with a reranker; empty: the first such")

    class AddBody(_Strict):
        documents: list[DocumentBody] = Field(min_length=1, max_length=limits.max_update_documents)

    class DeleteBody(_Strict):
        ids: list[doc_id] = Field(min_length=1, max_length=limits.max_update_documents)

    class ReloadBody(_Strict):
        pipeline: pipeline_name = Field("", description="pipeline to reload; empty: all")

    served = Literal[tuple(pipelines)]
    return SimpleNamespace(
        Pipeline=served,
        **{cls.__name__: cls for cls in (SearchBody, BatchBody, RerankBody, AddBody, DeleteBody, ReloadBody)},
    )


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


def _query(body: Any) -> SearchQuery:
    return SearchQuery(body.query, body.k, body.pipeline, body.weights, body.rerank_depth, body.explain)


def _documents(items: list[Any]) -> list[NewDocument]:
    return [NewDocument(doc.id, doc.text, doc.title) for doc in items]


def _deadline(timeout_ms: float | None) -> float | None:
    # The header's type and range are checked by the schema (a number > 0, finite): a bad one answers 422.
    return None if timeout_ms is None else time.monotonic() + timeout_ms / 1000


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
    float,  # not `float | None`: the schema then says "number", and a client never sends the string "null"
    Header(
        alias="X-Request-Timeout-Ms", gt=0, allow_inf_nan=False, description="deadline of this request, milliseconds"
    ),
]
# 422: the request does not match this schema (FastAPI's own 422 body is replaced by braid's error object).
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 409, 413, 422, 429, 503, 504)}
# The gRPC status name an HTTP-level refusal (no route, wrong method, unreadable body) reports, as grpc-gateway maps.
HTTP_STATUS_NAMES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
                     429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


Runner = Callable[[str, bool, str | None, float | None, Callable], Awaitable[Any]]


def create_app(core: CoreBase) -> FastAPI:
    """The HTTP API over ``core``."""
    app = FastAPI(
        title="braid",
        version="1",
        description="Hybrid retrieval and ranking: the HTTP face of the braid.v1 gRPC API.",
    )
    app.add_middleware(BodyLimit, limit=core.limits.max_request_bytes)
    bodies = request_models(core.limits, core.pipeline_names, core.retriever_names())
    state = {"draining": False}
    app.state.braid = state
    _error_handlers(app)
    run = _runner(core)
    _read_routes(app, core, bodies, run)
    _write_routes(app, core, bodies, run)
    _health_routes(app, core, state)
    return app


def _error_handlers(app: FastAPI) -> None:
    """Every error in braid's one error object: the request's fault as its status, anything else as 500."""

    @app.exception_handler(BraidError)
    async def braid_error(request: Request, error: BraidError) -> JSONResponse:
        code, status = status_of(error)
        return JSONResponse({"error": {"status": code.name, "message": str(error)}}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        message = "request does not match the schema: " + "; ".join(problems)
        return JSONResponse({"error": {"status": "INVALID_ARGUMENT", "message": message}}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        status = HTTP_STATUS_NAMES.get(error.status_code, "INVALID_ARGUMENT" if error.status_code < 500 else "INTERNAL")
        body = {"error": {"status": status, "message": str(error.detail)}}
        return JSONResponse(body, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("HTTP %s %s failed", request.method, request.url.path)
        body = {"error": {"status": "INTERNAL", "message": "internal error; the server log has the details"}}
        return JSONResponse(body, status_code=500)


def _runner(core: CoreBase) -> Runner:
    """``run(method, write, key, timeout, work)``: authorize, run ``work(deadline)`` on the core, count it."""

    async def run(method: str, write: bool, key: str | None, timeout: float | None, work: Callable) -> Any:
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

    return run


def _read_routes(app: FastAPI, core: CoreBase, bodies: SimpleNamespace, run: Runner) -> None:
    SearchBody, BatchBody, RerankBody = bodies.SearchBody, bodies.BatchBody, bodies.RerankBody

    @app.post("/v1/search", response_model=SearchResult, responses=ERRORS)
    async def search(
        body: SearchBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        query = _query(body)
        answer = await run(
            "Search", False, api_key_from(authorization, x_api_key), timeout, lambda d: core.search(query, d)
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
            api_key_from(authorization, x_api_key),
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
            api_key_from(authorization, x_api_key),
            timeout,
            lambda d: core.rerank(body.query, documents, body.pipeline, d),
        )
        return _answer(answer, False)

    @app.get("/v1/pipelines", response_model=PipelineList, responses=ERRORS)
    async def pipelines(authorization: Key = None, x_api_key: ApiKey = None) -> dict:
        infos = await run(
            "ListPipelines", False, api_key_from(authorization, x_api_key), None, lambda _: core.list_pipelines()
        )
        return {"pipelines": infos, "default_pipeline": core.default_pipeline}


def _write_routes(app: FastAPI, core: CoreBase, bodies: SimpleNamespace, run: Runner) -> None:
    Pipeline = bodies.Pipeline
    AddBody, DeleteBody, ReloadBody = bodies.AddBody, bodies.DeleteBody, bodies.ReloadBody

    @app.post("/v1/pipelines/{name}/documents", response_model=UpdateResult, responses=ERRORS)
    async def add(
        name: Pipeline, body: AddBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        documents = _documents(body.documents)
        count, generation = await run(
            "AddDocuments",
            True,
            api_key_from(authorization, x_api_key),
            timeout,
            lambda deadline: core.add_documents(name, documents, deadline),
        )
        return {"doc_count": count, "generation": generation}

    @app.post("/v1/pipelines/{name}/documents/delete", response_model=UpdateResult, responses=ERRORS)
    async def delete(
        name: Pipeline, body: DeleteBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        count, generation = await run(
            "DeleteDocuments",
            True,
            api_key_from(authorization, x_api_key),
            timeout,
            lambda deadline: core.delete_documents(name, body.ids, deadline),
        )
        return {"doc_count": count, "generation": generation}

    @app.post("/v1/reload", response_model=PipelineList, responses=ERRORS)
    async def reload(
        body: ReloadBody, authorization: Key = None, x_api_key: ApiKey = None, timeout: Timeout = None
    ) -> dict:
        infos = await run(
            "Reload", True, api_key_from(authorization, x_api_key), timeout, lambda _: core.reload(body.pipeline)
        )
        return {"pipelines": infos, "default_pipeline": core.default_pipeline}


def _health_routes(app: FastAPI, core: CoreBase, state: dict[str, bool]) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz() -> Response:
        if state["draining"]:
            body = {"error": {"status": "UNAVAILABLE", "message": "shutting down"}}
            return JSONResponse(body, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "description": "Prometheus text exposition",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        },
    )
    async def metrics() -> Response:
        return Response(core.metrics.render(), media_type=CONTENT_TYPE)
