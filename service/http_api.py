"""The HTTP front end: a FastAPI app over the same core, with the same operations, errors and limits as gRPC.

Every error answers braid's one error object, ``{"error": {"status": "INVALID_ARGUMENT", "message": ...}}``, with the
HTTP status of :func:`braid.service.errors.status_of`; a request that does not match the schema (a field of the wrong
type or out of range, an unknown field, a header, a body that is not JSON at all) answers 400 INVALID_ARGUMENT, as
the same value over gRPC does; an unknown route 404 and a wrong method 405, in the same object. Types are strict: a
string is not an integer, 1 is not a boolean (FastAPI's lax mode would take ``"5"`` for 5). Errors below the
application (request line or headers too long, a request cut off by shutdown) are answered in the same object by
:mod:`braid.service.http_transport`. The OpenAPI schema at ``/openapi.json`` declares what each served pipeline
takes, the API key (security schemes), the deadline header (in each operation's description), every error status and
every content type served (``/metrics`` is Prometheus text); interactive docs at ``/docs``.
docs/api.md has the contract both protocols keep, field by field.
"""

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException

from braid.common.errors import BraidError
from braid.pipelines.pipeline import ExplainedHit
from braid.service.console_routes import add_console
from braid.service.core import CoreBase, NewDocument, SearchAnswer, SearchQuery, api_key_from
from braid.service.errors import status_of
from braid.service.http_transport import AnswerWhenCutOff, BodyLimit, error_object, retry_headers
from braid.service.limits import ServiceLimits
from braid.service.metrics import CONTENT_TYPE

log = logging.getLogger(__name__)


# "Holds a character that is not whitespace", spelled as one explicit class: JSON Schema's ECMA-262 ``\\s``, Python's
# and pydantic's (Rust) disagree on a few characters (U+0085, U+001C-U+001F, U+FEFF), so a client generating ids
# from the schema and this server would disagree on what a blank id is. The class is the union of all three.
NOT_BLANK = "[^\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff]"


class _Strict(BaseModel):
    # strict: JSON's types are the contract (docs/api.md); no string is read as a number, no number as a boolean.
    model_config = ConfigDict(extra="forbid", strict=True)


def _integral(value: Any) -> Any:
    # JSON Schema's integer is a number without a fractional part, so 5.0 is the integer 5 (5.5, "5" and true are not).
    return int(value) if isinstance(value, float) and value.is_integer() else value


Integer = Annotated[int, BeforeValidator(_integral)]


def search_rules(pipelines: list[dict[str, Any]], default: str) -> list[dict[str, Any]]:
    """One JSON Schema branch per served pipeline, of which a search body must match one: the fusion weights and
    rerank depths that pipeline takes. So the OpenAPI document says which requests a pipeline refuses (weights
    without fusion, weights summing to 0, reranking without a reranker); the core refuses them over both protocols.
    """
    nothing = [{"type": "null"}]
    branches = []
    for info in pipelines:
        name, retrievers = info["name"], info["retrievers"]
        if info["fusion"]:
            configured = info["weights"] or {}
            # The weights a request leaves out keep the pipeline's: they sum to 0 only if every retriever weighted
            # now is given 0, and every other one given is 0 too.
            weighted = [r for r in retrievers if configured.get(r, 1.0) > 0]
            all_zero = {"required": weighted, "properties": {r: {"const": 0} for r in retrievers}}
            weights = {"anyOf": [*nothing, {"type": "object", "propertyNames": {"enum": retrievers}, "not": all_zero}]}
        else:
            weights = {"anyOf": [*nothing, {"type": "object", "maxProperties": 0}]}
        depth = {"anyOf": [*nothing, {"type": "integer", "minimum": 0} if info["rerank"] else {"const": 0}]}
        branch: dict[str, Any] = {
            "properties": {
                "pipeline": {"enum": ["", name] if name == default else [name]},
                "weights": weights,
                "rerank_depth": depth,
            }
        }
        if name != default:
            branch["required"] = ["pipeline"]
        branches.append(branch)
    return branches


def request_models(limits: ServiceLimits, pipelines: list[dict[str, Any]], default: str) -> SimpleNamespace:
    """Request bodies whose schema states the server's limits and what each served pipeline takes (``pipelines``:
    the core's :meth:`list_pipelines`), so that the OpenAPI document says what is accepted. A value beyond them
    answers 400 INVALID_ARGUMENT, as over gRPC (an unknown pipeline 404 NOT_FOUND, an unsupported stage 400
    FAILED_PRECONDITION)."""
    names = [info["name"] for info in pipelines]
    reranking = [info["name"] for info in pipelines if info["rerank"]]
    retrievers = sorted({name for info in pipelines for name in info["retrievers"]})
    # The served names are listed in the schema, but a name outside them is the core's NOT_FOUND, as over gRPC.
    pipeline_name = Annotated[str, Field(json_schema_extra={"enum": ["", *names]})]  # "": the default pipeline
    query_text = Annotated[
        str, Field(min_length=1, max_length=limits.max_query_chars, pattern=NOT_BLANK, description="query text")
    ]
    doc_id = Annotated[str, Field(min_length=1, max_length=512, pattern=NOT_BLANK)]
    retriever_name = Literal[tuple(retrievers)] if retrievers else str  # any served pipeline's retrievers
    # A filter names the collection's declared fields; where it declares none, the schema admits no filter at all
    # (schema-valid requests are accepted: a filter there could only be refused).
    fields = dict(pipelines[0].get("fields") or {}) if pipelines else {}
    filter_type: Any = (dict[str, Any] | None) if fields else None
    filter_note = (
        'metadata filter, e.g. {"field": "year", "gte": 2020}, over the declared fields: '
        + ", ".join(f"{name} ({kind})" for name, kind in fields.items())
        if fields
        else "this collection declares no metadata fields: no filter"
    )

    class SearchBody(_Strict):
        model_config = ConfigDict(json_schema_extra={"anyOf": search_rules(pipelines, default)})

        query: query_text
        k: Integer = Field(
            limits.default_k, ge=0, le=limits.max_k, description=f"number of hits; 0: {limits.default_k}, as over gRPC"
        )
        pipeline: pipeline_name = Field("", description="pipeline name; empty: the server's default")
        weights: dict[retriever_name, Annotated[float, Field(ge=0, allow_inf_nan=False)]] | None = Field(
            None, description="fusion weights for this request, by retriever name (of the pipeline asked)"
        )
        rerank_depth: Integer | None = Field(
            None, ge=0, description="rerank depth for this request; 0 skips reranking; beyond the collection: all of it"
        )
        explain: bool = Field(False, description="include each hit's provenance")
        filter: filter_type = Field(None, description=filter_note)

    class BatchBody(_Strict):
        requests: list[SearchBody] = Field(min_length=1, max_length=limits.max_batch)

    class DocumentBody(_Strict):
        id: doc_id
        text: str = Field(max_length=limits.max_document_chars)
        title: str = Field("", max_length=limits.max_document_chars)

    class RerankBody(_Strict):
        query: query_text
        documents: list[DocumentBody] = Field(min_length=1, max_length=limits.max_rerank_documents)
        pipeline: Annotated[str, Field(json_schema_extra={"enum": ["", *reranking]})] = Field(
            "", description="a pipeline with a reranker; empty: the first such"
        )

    class NewDocumentBody(DocumentBody):
        metadata: dict[str, Any] | None = Field(None, description="field values; declared fields are typed")
        # A written document needs some text in its title or its text: there is nothing to index otherwise.
        model_config = ConfigDict(
            json_schema_extra={
                "anyOf": [
                    {"required": [field], "properties": {field: {"pattern": NOT_BLANK}}} for field in ("text", "title")
                ]
            }
        )

    class AddBody(_Strict):
        documents: list[NewDocumentBody] = Field(min_length=1, max_length=limits.max_update_documents)

    class DeleteBody(_Strict):
        ids: list[doc_id] = Field(min_length=1, max_length=limits.max_update_documents)

    class ReloadBody(_Strict):
        pipeline: pipeline_name = Field("", description="pipeline to reload; empty: all")

    class GetDocumentsBody(_Strict):
        pipeline: pipeline_name = Field("", description="a served pipeline (all share the collection); empty: default")
        ids: list[doc_id] = Field(min_length=1, max_length=limits.max_update_documents)

    updatable = [info["name"] for info in pipelines if info["updatable"]]
    writable = Annotated[str, PathParam(json_schema_extra={"enum": updatable}, description="an updatable pipeline")]
    return SimpleNamespace(
        Pipeline=writable,
        reranks=bool(reranking),
        updates=bool(updatable),
        **{
            cls.__name__: cls
            for cls in (SearchBody, BatchBody, RerankBody, AddBody, DeleteBody, ReloadBody, GetDocumentsBody)
        },
    )


class RetrieverScore(BaseModel):
    rank: int | None
    score: float | None
    contribution: float | None = Field(None, description="this retriever's term of the fused score; they sum to it")


class Explanation(BaseModel):
    retrievers: dict[str, RetrieverScore]
    fused_score: float | None
    stages: dict[str, float]


class HitModel(BaseModel):
    rank: int
    doc_id: str
    score: float
    explanation: Explanation | None = None
    passage: str = Field("", description="in a collection of passages: the document's best (MaxP); else empty")


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
    fields: dict[str, str] = Field(default_factory=dict, description="typed metadata fields filters may name")


class WriteSummaryModel(BaseModel):
    seq: int
    upserted: int
    deleted: int


class CollectionModel(BaseModel):
    name: str
    documents: int
    writes: int = Field(description="write batches logged since the base indexes were built")
    last_write_at: str = Field(description="UTC, ISO 8601; empty when no write was logged")
    segments: int = Field(description="write segments searched beside the base indexes")
    recent_writes: list[WriteSummaryModel] = Field(description="the last writes, newest first (at most 10)")


class PipelineList(BaseModel):
    pipelines: list[PipelineModel]
    default_pipeline: str
    collection: CollectionModel | None = Field(None, description="the served collection (ListPipelines only)")


class DocumentModel(BaseModel):
    id: str
    title: str
    text: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentList(BaseModel):
    documents: list[DocumentModel]


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
    row["passage"] = hit.passage or ""  # as over gRPC: the zero value for whole documents
    if explain:
        row["explanation"] = {
            "retrievers": {
                name: {"rank": s.rank, "score": s.score, "contribution": s.contribution}
                for name, s in hit.sources.items()
            },
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
    return SearchQuery(body.query, body.k, body.pipeline, body.weights, body.rerank_depth, body.explain, body.filter)


def _documents(items: list[Any]) -> list[NewDocument]:
    return [NewDocument(doc.id, doc.text, doc.title, getattr(doc, "metadata", None)) for doc in items]


#: The deadline header, and its bounds: a shorter deadline (5e-324 ms) could only ever answer 504.
TIMEOUT_HEADER = "X-Request-Timeout-Ms"
MIN_TIMEOUT_MS = 1.0
MAX_TIMEOUT_MS = 3_600_000.0  # an hour; the server's own default is --timeout (30 s)
# The headers are read by the runner, not declared as parameters: the OpenAPI document states the API key as security
# schemes, and this header in each operation's description. Declared header parameters make schemathesis expect an
# unknown header (any proxy adds some) to be refused.
DEADLINE_NOTE = (
    f"Optional header `{TIMEOUT_HEADER}`: this request's deadline in milliseconds, a finite number from "
    f"{MIN_TIMEOUT_MS:g} to {MAX_TIMEOUT_MS:g} (else 400); once it passes the answer is 504 DEADLINE_EXCEEDED. "
    "Without it: the server's --timeout."
)


def _deadline(header: str | None) -> float | None:
    """The ``time.monotonic()`` instant of a request's deadline header, or None without one."""
    if header is None:
        return None
    try:
        timeout_ms = float(header)
    except ValueError:
        timeout_ms = math.nan
    if not MIN_TIMEOUT_MS <= timeout_ms <= MAX_TIMEOUT_MS:  # NaN fails both comparisons
        raise BraidError(
            f"header {TIMEOUT_HEADER} must be a number of milliseconds from {MIN_TIMEOUT_MS:g} to "
            f"{MAX_TIMEOUT_MS:g}, got {header!r}"
        )
    return time.monotonic() + timeout_ms / 1000


# Every error status a route answers (docs/api.md says which input gets which); FastAPI's own 422 is not one of them.
ERRORS = {status: {"model": ErrorBody} for status in (400, 401, 403, 404, 413, 429, 503, 504)}
WRITE_ERRORS = {**ERRORS, 409: {"model": ErrorBody}}  # ALREADY_EXISTS: an added id the index holds
# The gRPC status name an HTTP-level refusal (no route, wrong method, unreadable body) reports, as grpc-gateway maps.
HTTP_STATUS_NAMES = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED",
                     429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}  # fmt: skip


Runner = Callable[[str, bool, Request, Callable], Awaitable[Any]]


def create_app(core: CoreBase, pipelines: list[dict[str, Any]], console: bool = True) -> FastAPI:
    """The HTTP API over ``core``, whose served ``pipelines`` (``core.list_pipelines()``) its schema describes;
    ``console``: the web console at ``/`` (:mod:`braid.service.console_routes`)."""
    app = FastAPI(
        title="braid",
        version="1",
        description="Hybrid retrieval and ranking: the HTTP face of the braid.v1 gRPC API.",
    )
    app.add_middleware(BodyLimit, limit=core.limits.max_request_bytes)
    app.add_middleware(AnswerWhenCutOff)  # outermost: whatever is cut off, the answer is still braid's object
    bodies = request_models(core.limits, pipelines, core.default_pipeline)
    state = {"draining": False}
    app.state.braid = state
    _error_handlers(app)
    run = _runner(core)
    _read_routes(app, core, bodies, run)
    _write_routes(app, core, bodies, run)
    _health_routes(app, core, state)
    if console:
        add_console(app)
    _openapi_document(app, core.auth.reads)
    return app


#: The routes that write (Add, Upsert, Delete, Reload): they need the API key; reads need it only under --auth-reads.
WRITES = {"/v1/pipelines/{pipeline}/documents", "/v1/pipelines/{pipeline}/documents/delete", "/v1/reload"}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "authorization: Bearer <API key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "the API key"},
}


def _openapi_document(app: FastAPI, auth_reads: bool) -> None:
    """The OpenAPI document as braid answers: without the 422 responses FastAPI adds to every route (a request that
    does not match the schema answers 400 INVALID_ARGUMENT, in braid's error object, declared in ``ERRORS``); the API
    key as security schemes, required by the operations that need it; the deadline header in each description."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    operation.get("responses", {}).pop("422", None)
                    if path in WRITES or (auth_reads and path.startswith("/v1/")):
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
                    if method == "post":
                        operation["description"] = DEADLINE_NOTE
            components = schema.setdefault("components", {})
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            components["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def error_response(http_status: int, status: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """braid's error object as an HTTP answer (Retry-After on 503)."""
    headers = {**retry_headers(http_status), **(headers or {})}
    return JSONResponse(error_object(status, message), status_code=http_status, headers=headers)


def _error_handlers(app: FastAPI) -> None:
    """Every error in braid's one error object: the request's fault as its status, anything else as 500."""

    @app.exception_handler(BraidError)
    async def braid_error(request: Request, error: BraidError) -> JSONResponse:
        code, status = status_of(error)
        return error_response(status, code.name, str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()))
            problems.append(f"{where}: {item.get('msg', 'invalid')}")
        message = "request does not match the schema: " + "; ".join(problems)
        return error_response(400, "INVALID_ARGUMENT", message)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        status = HTTP_STATUS_NAMES.get(error.status_code, "INVALID_ARGUMENT" if error.status_code < 500 else "INTERNAL")
        message = str(error.detail)
        if message == "There was an error parsing the body":  # FastAPI's words for a body that is not UTF-8 JSON
            message = "request body is not JSON (or not UTF-8)"
        headers = error.headers
        if error.status_code == 405:
            # Starlette names the methods of the first route matching the path; a path with a route per method
            # (POST adds, PUT upserts) allows them all.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
        return error_response(error.status_code, status, message, headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("HTTP %s %s failed", request.method, request.url.path)
        return error_response(500, "INTERNAL", "internal error; the server log has the details")


def _allowed_methods(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods
    return sorted(methods)


def _runner(core: CoreBase) -> Runner:
    """``run(method, write, request, work)``: authorize the request's key, take its deadline, run
    ``work(deadline)`` on the core, count it."""

    async def run(method: str, write: bool, request: Request, work: Callable) -> Any:
        tick = time.perf_counter()
        status = 200
        headers = request.headers
        try:
            core.authorize(api_key_from(headers.get("authorization"), headers.get("x-api-key")), write)
            return await core.call(work, _deadline(headers.get(TIMEOUT_HEADER)))
        except asyncio.CancelledError:  # the server stopped it (AnswerWhenCutOff answers it 503)
            status = 503
            raise
        except Exception as error:
            status = status_of(error)[1]
            raise
        finally:
            core.metrics.requests.labels("http", method, str(status)).inc()
            core.metrics.latency.labels("http", method).observe(time.perf_counter() - tick)

    return run


def _read_routes(app: FastAPI, core: CoreBase, bodies: SimpleNamespace, run: Runner) -> None:
    SearchBody, BatchBody, RerankBody = bodies.SearchBody, bodies.BatchBody, bodies.RerankBody
    GetDocumentsBody = bodies.GetDocumentsBody

    @app.post("/v1/search", response_model=SearchResult, responses=ERRORS)
    async def search(body: SearchBody, request: Request) -> dict:
        query = _query(body)
        answer = await run("Search", False, request, lambda d: core.search(query, d))
        return _answer(answer, body.explain)

    @app.post("/v1/batch-search", response_model=BatchResult, responses=ERRORS)
    async def batch_search(body: BatchBody, request: Request) -> dict:
        queries = [_query(item) for item in body.requests]
        answers = await run(
            "BatchSearch",
            False,
            request,
            lambda d: core.batch_search(queries, d),
        )
        return {"responses": [_answer(a, q.explain) for a, q in zip(answers, queries, strict=True)]}

    # A server with no reranking pipeline answers Rerank FAILED_PRECONDITION, as over gRPC; its schema omits the route.
    @app.post("/v1/rerank", response_model=SearchResult, responses=ERRORS, include_in_schema=bodies.reranks)
    async def rerank(body: RerankBody, request: Request) -> dict:
        documents = _documents(body.documents)
        answer = await run(
            "Rerank",
            False,
            request,
            lambda d: core.rerank(body.query, documents, body.pipeline, d),
        )
        return _answer(answer, False)

    @app.get("/v1/pipelines", response_model=PipelineList, responses=ERRORS)
    async def pipelines(request: Request) -> dict:
        infos, status = await run(
            "ListPipelines", False, request, lambda _: (core.list_pipelines(), core.collection_status())
        )
        return {"pipelines": infos, "default_pipeline": core.default_pipeline, "collection": status}

    @app.post("/v1/documents/get", response_model=DocumentList, responses=ERRORS)
    async def get_documents(body: GetDocumentsBody, request: Request) -> dict:
        found = await run(
            "GetDocuments", False, request, lambda deadline: core.get_documents(body.pipeline, body.ids, deadline)
        )
        return {
            "documents": [
                {"id": doc.id, "title": doc.title, "text": doc.text, "metadata": doc.metadata or {}} for doc in found
            ]
        }


def _write_routes(app: FastAPI, core: CoreBase, bodies: SimpleNamespace, run: Runner) -> None:
    Pipeline = bodies.Pipeline
    AddBody, DeleteBody, ReloadBody = bodies.AddBody, bodies.DeleteBody, bodies.ReloadBody

    async def update(method: str, request: Request, work: Callable[[float], tuple[int, int]]) -> dict:
        """A write, run as ``method`` (a key needed): its (doc count, generation) as the response body."""
        count, generation = await run(method, True, request, work)
        return {"doc_count": count, "generation": generation}

    # Likewise the writes, on a server none of whose pipelines takes updates.
    @app.post(
        "/v1/pipelines/{pipeline}/documents",
        response_model=UpdateResult,
        responses=WRITE_ERRORS,
        include_in_schema=bodies.updates,
    )
    async def add(pipeline: Pipeline, body: AddBody, request: Request) -> dict:
        documents = _documents(body.documents)
        return await update("AddDocuments", request, lambda deadline: core.add_documents(pipeline, documents, deadline))

    @app.put(
        "/v1/pipelines/{pipeline}/documents",
        response_model=UpdateResult,
        responses=ERRORS,
        include_in_schema=bodies.updates,
    )
    async def upsert(pipeline: Pipeline, body: AddBody, request: Request) -> dict:
        documents = _documents(body.documents)
        return await update(
            "UpsertDocuments", request, lambda deadline: core.upsert_documents(pipeline, documents, deadline)
        )

    @app.post(
        "/v1/pipelines/{pipeline}/documents/delete",
        response_model=UpdateResult,
        responses=ERRORS,
        include_in_schema=bodies.updates,
    )
    async def delete(pipeline: Pipeline, body: DeleteBody, request: Request) -> dict:
        return await update(
            "DeleteDocuments", request, lambda deadline: core.delete_documents(pipeline, body.ids, deadline)
        )

    @app.post("/v1/reload", response_model=PipelineList, responses=ERRORS)
    async def reload(body: ReloadBody, request: Request) -> dict:
        infos = await run("Reload", True, request, lambda _: core.reload(body.pipeline))
        return {"pipelines": infos, "default_pipeline": core.default_pipeline}


def _health_routes(app: FastAPI, core: CoreBase, state: dict[str, bool]) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorBody}})
    async def readyz() -> Response:
        if state["draining"]:
            return error_response(503, "UNAVAILABLE", "shutting down")
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
