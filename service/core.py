"""The one service core behind gRPC and HTTP: pipelines, limits, auth, admission, deadlines, metrics.

Front ends translate their wire format into the calls below and the errors back (:mod:`braid.service.errors`); all
semantics live here, so the two protocols cannot drift apart. Work runs on a bounded pool of worker threads
(Lucene, faiss and torch release the GIL); the event loops of the front ends only parse and wait.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError, DeadlineExceeded, UnknownDocuments
from braid.indexer.manifest import Manifest
from braid.pipelines.live_collection import LiveCollection
from braid.pipelines.pipeline import ExplainedHit, Pipeline, PipelineSpec, SearchOptions, ShardOpener, open_pipeline
from braid.service.admission import Admission
from braid.service.errors import FailedPrecondition, PermissionDenied, Unauthenticated
from braid.service.limits import ServiceLimits
from braid.service.metrics import Metrics
from braid.service.pipeline_registry import PipelineRegistry, PipelineSlot
from braid.service.rerank_batcher import BatchingReranker
from braid.service.result_cache import DEFAULT_RESULT_CACHE_ENTRIES, ResultCache, request_key

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class SearchQuery:
    """One search, as both protocols carry it. ``k`` 0 means the default (10); ``pipeline`` "" the default one."""

    query: str
    k: int = 0
    pipeline: str = ""
    weights: Mapping[str, float] | None = None
    rerank_depth: int | None = None
    explain: bool = False
    filter: Mapping[str, Any] | None = None


@dataclass
class SearchAnswer:
    pipeline: str
    hits: list[ExplainedHit]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NewDocument:
    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] | None = None

    @property
    def contents(self) -> str:
        return f"{self.title} {self.text}".strip() if self.title else self.text

    def as_document(self) -> Document:
        return Document(self.id, self.title, self.text, self.metadata)


@dataclass(frozen=True)
class AuthConfig:
    """``api_key`` guards writes (Add/Delete/Reload), and reads too when ``reads`` is set. Without a key, writes
    are refused: a server never accepts index changes from anyone by default."""

    api_key: str | None = None
    reads: bool = False

    def __post_init__(self) -> None:
        if self.reads and not self.api_key:
            raise BraidError("--auth-reads needs an API key (--api-key-file or BRAID_API_KEY)")


def check_served(specs: Sequence[PipelineSpec]) -> None:
    """At least one pipeline, no name twice: what any core serves."""
    if not specs:
        raise BraidError("give at least one pipeline to serve")
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise BraidError(f"pipeline name(s) given twice: {', '.join(repeated)}")


def api_key_from(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key of ``authorization: Bearer KEY``, else of ``x-api-key: KEY`` (header or gRPC metadata)."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key.strip() if x_api_key else None


class CoreBase:
    """What every core does, whoever answers the operations: limits, auth, admission, deadlines, metrics.

    :class:`SearchCore` answers from pipelines it opened; the Ray Serve broker's client
    (:class:`braid.service.ray_broker.BrokerCore`) forwards to a broker deployment. Both front ends take either.
    """

    def __init__(self, limits: ServiceLimits | None = None, auth: AuthConfig | None = None) -> None:
        self.limits = limits or ServiceLimits()
        self.auth = auth or AuthConfig()
        self.metrics = Metrics()
        self.admission = Admission(self.limits.max_concurrency)
        self.metrics.inflight.set_function(lambda: self.admission.admitted)
        self.metrics.queue_depth.set_function(lambda: self.admission.queued)
        self.executor = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="braid-worker")

    # -- boundary checks ---------------------------------------------------------------------------------------

    def authorize(self, api_key: str | None, write: bool) -> None:
        """Raise unless ``api_key`` may perform a read (``write`` False) or a write."""
        if not write and not self.auth.reads:
            return
        if self.auth.api_key is None:
            raise PermissionDenied(
                "writes are disabled: the server was started without an API key (--api-key-file or BRAID_API_KEY)"
            )
        if not api_key:
            raise Unauthenticated("this operation needs an API key: send 'authorization: Bearer <key>'")
        # Constant-time comparison: response timing must not reveal how much of a guessed key was right.
        if not hmac.compare_digest(api_key.encode(), self.auth.api_key.encode()):
            raise Unauthenticated("invalid API key")

    # -- execution ---------------------------------------------------------------------------------------------

    async def call(self, work: Callable[[float], T], deadline: float | None = None) -> T:
        """Admit a request, run ``work(deadline)`` on a worker thread, and answer by ``deadline`` at the latest.

        ``deadline`` is a ``time.monotonic()`` instant (the server's default timeout when None). The request stays
        admitted until its thread really finishes, so the concurrency limit counts work, not waiting callers.
        """
        if deadline is None:
            deadline = time.monotonic() + self.limits.default_timeout_s
        try:
            self.admission.enter()
        except BraidError as error:
            self.metrics.rejected.labels(type(error).__name__).inc()
            raise

        def run() -> T:
            with self.admission.running():
                if time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline exceeded while waiting for a worker")
                return work(deadline)

        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.executor, run)
        except BaseException:
            self.admission.leave()
            raise
        future.add_done_callback(lambda _: self.admission.leave())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            # The worker stops at its next stage boundary (SearchOptions.deadline); its result is dropped.
            future.add_done_callback(lambda done: done.exception())  # consume, so asyncio does not log it
            raise DeadlineExceeded("deadline exceeded") from None

    # -- operations: what a core answers (on worker threads, through :meth:`call`) --------------------------------

    @property
    def pipeline_names(self) -> list[str]:
        raise NotImplementedError

    @property
    def default_pipeline(self) -> str:
        return self.pipeline_names[0]

    def retriever_names(self) -> list[str]:
        """Every served pipeline's retriever names, sorted: the names a request's fusion weights may use."""
        raise NotImplementedError

    def search(self, query: SearchQuery, deadline: float | None = None) -> SearchAnswer:
        raise NotImplementedError

    def batch_search(self, queries: Sequence[SearchQuery], deadline: float | None = None) -> list[SearchAnswer]:
        raise NotImplementedError

    def rerank(
        self, query: str, documents: Sequence[NewDocument], pipeline: str = "", deadline: float | None = None
    ) -> SearchAnswer:
        raise NotImplementedError

    def list_pipelines(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def collection_status(self) -> dict[str, Any]:
        """The served collection: name, live documents, writes since its base (``LiveCollection.status``)."""
        return {"name": "", "documents": 0, "writes": 0, "last_write_at": "", "segments": 0, "recent_writes": []}

    def get_documents(self, pipeline: str, ids: Sequence[str], deadline: float | None = None) -> list[NewDocument]:
        raise FailedPrecondition("GetDocuments is answered by a server holding its collection (not a Ray broker)")

    def add_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None
    ) -> tuple[int, int]:
        raise NotImplementedError

    def upsert_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None
    ) -> tuple[int, int]:
        raise NotImplementedError

    def delete_documents(self, pipeline: str, ids: Sequence[str], deadline: float | None = None) -> tuple[int, int]:
        raise NotImplementedError

    def reload(self, pipeline: str = "") -> list[dict[str, Any]]:
        raise NotImplementedError

    def drain(self, timeout: float) -> bool:
        """Refuse new requests, wait for admitted ones; True when all finished within ``timeout`` seconds."""
        return self.admission.drain(timeout)

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def _forget_answers(pipeline: Pipeline) -> None:
    """An index edited in place (sharded serving): the pipeline's cached answers may be of the old documents."""
    results: ResultCache | None = getattr(pipeline, "results", None)
    if results is not None:
        results.clear()


class SearchCore(CoreBase):
    """Loads the pipelines once and answers every operation for both front ends."""

    def __init__(
        self,
        dataset: Dataset,
        specs: Sequence[PipelineSpec],
        index_root: Path,
        limits: ServiceLimits | None = None,
        auth: AuthConfig | None = None,
        threads: int | None = None,
        build_missing: bool = False,
        rerank_batch: int = 8,
        rerank_wait_ms: float = 5.0,
        shards: int = 1,
        open_shard: ShardOpener | None = None,
        result_cache_entries: int = DEFAULT_RESULT_CACHE_ENTRIES,
    ) -> None:
        check_served(specs)
        self.result_cache_entries = result_cache_entries
        self.dataset = dataset
        self.index_root = Path(index_root)
        self.threads = threads
        self.build_missing = build_missing
        self.rerank_batch = rerank_batch
        self.rerank_wait_ms = rerank_wait_ms
        # Serving shards: > 1 opens every pipeline over the shards a build job wrote, through ``open_shard``
        # (Ray Serve deployments under braid serve --ray; in this process when None).
        self.shards, self.open_shard = shards, open_shard
        super().__init__(limits, auth)
        self._batchers: dict[int, BatchingReranker] = {}
        # The collection's write side, shared by every pipeline served: a write through any of them is seen by all.
        # Sharded serving keeps the in-place shard updates (multivector) of braid.indexer.update_transaction.
        self.live = LiveCollection(dataset, self.index_root, threads) if shards == 1 and open_shard is None else None
        if self.live is not None:
            self.live.try_writer_lock()  # while this server runs, it is the collection's writer
        self.registry = PipelineRegistry()
        for spec in specs:
            self.registry.add(spec, self._open(spec))
            self.metrics.generation.labels(spec.name).set(1)

    @property
    def pipeline_names(self) -> list[str]:
        return self.registry.names

    @property
    def default_pipeline(self) -> str:
        return self.registry.default

    def _open(self, spec: PipelineSpec) -> Pipeline:
        pipeline = open_pipeline(
            spec,
            self.dataset,
            self.index_root,
            self.threads,
            build_missing=self.build_missing,
            shards=self.shards,
            open_shard=self.open_shard,
            live=self.live,
        )
        if pipeline.reranker is not None:
            # One batcher per model instance, shared by every pipeline (and generation) that reranks with it.
            ranker = pipeline.reranker
            if id(ranker) not in self._batchers:
                self._batchers[id(ranker)] = BatchingReranker(
                    ranker, self.rerank_batch, self.rerank_wait_ms, self.metrics.rerank_batch.observe
                )
            pipeline.reranker = self._batchers[id(ranker)]
        self.metrics.observe_index_memory(spec.name, pipeline.index_paths)
        # Each opened pipeline caches its own answers: a reload starts empty (braid.service.result_cache).
        pipeline.results = ResultCache(self.result_cache_entries) if self.result_cache_entries else None
        self.metrics.watch_result_cache(spec.name, pipeline.results)
        return pipeline

    # -- operations (run on worker threads) ------------------------------------------------------------------

    def check_search(self, query: SearchQuery) -> tuple[PipelineSlot, int]:
        self.limits.check_query(query.query)
        k = self.limits.resolve_k(query.k)
        slot = self.registry.slot(query.pipeline)
        with slot.lease() as pipeline:
            pipeline.check_options(SearchOptions(query.weights or None, query.rerank_depth, filter=query.filter))
        return slot, k

    def search(self, query: SearchQuery, deadline: float | None = None) -> SearchAnswer:
        slot, k = self.check_search(query)
        options = SearchOptions(query.weights or None, query.rerank_depth, deadline, query.filter)
        with slot.lease() as pipeline:
            tick = time.perf_counter()
            # Read before searching: a write acknowledged after this has bumped it, so its key differs.
            version = self.live.version if self.live is not None else 0
            key = request_key(query.query, k, query.weights, query.rerank_depth, query.filter, version)
            results: ResultCache | None = getattr(pipeline, "results", None)
            cached = results.get(key) if results is not None else None
            if cached is not None:
                hits, timings = cached[0], {"result_cache": round((time.perf_counter() - tick) * 1000, 3)}
            else:
                # Like Pyserini and Qdrant, a k beyond the collection returns every document rather than failing.
                hits, timings = pipeline.search_explained(query.query, min(k, pipeline.doc_count), options)
                if results is not None:
                    results.put(key, (hits, timings))
        self.metrics.observe_stages(slot.spec.name, timings)
        return SearchAnswer(slot.spec.name, hits, timings)

    def batch_search(self, queries: Sequence[SearchQuery], deadline: float | None = None) -> list[SearchAnswer]:
        self.limits.check_count("requests", len(queries), self.limits.max_batch)
        for position, query in enumerate(queries):  # all checked before any runs: a batch fails as a whole
            try:
                self.check_search(query)
            except BraidError as error:
                raise type(error)(f"request {position}: {error}") from None
        return [self.search(query, deadline) for query in queries]

    def rerank_slot(self, name: str) -> PipelineSlot:
        if name:
            slot = self.registry.slot(name)
            if slot.spec.rerank is None:
                raise FailedPrecondition(f"pipeline {name!r} has no reranker (no [rerank] table)")
            return slot
        for slot in self.registry.slots():
            if slot.spec.rerank is not None:
                return slot
        raise FailedPrecondition("no pipeline served here has a reranker; start the server with one (e.g. bm25-first)")

    def rerank(
        self, query: str, documents: Sequence[NewDocument], pipeline: str = "", deadline: float | None = None
    ) -> SearchAnswer:
        self.limits.check_query(query)
        documents = _last_of_each_id(documents)
        self._check_documents(documents, self.limits.max_rerank_documents)
        slot = self.rerank_slot(pipeline)
        tick = time.perf_counter()
        with slot.lease() as opened:
            ranked = opened.reranker.rerank(query, [(doc.id, doc.contents) for doc in documents], deadline=deadline)
        timings = {"rerank": (time.perf_counter() - tick) * 1000}
        self.metrics.observe_stages(slot.spec.name, timings)
        hits = [ExplainedHit(doc_id, score, {}, stages={"rerank": score}) for doc_id, score in ranked]
        return SearchAnswer(slot.spec.name, hits, timings)

    def _check_documents(self, documents: Sequence[NewDocument], limit: int) -> None:
        self.limits.check_count("documents", len(documents), limit)
        ids = [doc.id for doc in documents]
        if any(not doc_id or not doc_id.strip() for doc_id in ids):
            raise BraidError("every document needs a non-empty id")
        for doc in documents:
            for field_name, value in (("title", doc.title), ("text", doc.text)):
                if len(value) > self.limits.max_document_chars:
                    raise BraidError(
                        f"document {doc.id!r}: its {field_name} has {len(value)} characters; at most "
                        f"{self.limits.max_document_chars} are allowed"
                    )

    def _check_writes(self, documents: Sequence[NewDocument]) -> list[NewDocument]:
        documents = _last_of_each_id(documents)
        self._check_documents(documents, self.limits.max_update_documents)
        blank = [doc.id for doc in documents if not doc.contents.strip()]
        if blank:  # nothing to index: every index kind would skip it
            raise BraidError(f"{len(blank)} document(s) have neither title nor text, e.g. {blank[:5]}; nothing added")
        return documents

    def add_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None, reload: bool = True
    ) -> tuple[int, int]:
        """Add new documents to the collection (an id it holds is refused: ALREADY_EXISTS): (doc count, generation).

        Over a live collection the write is durable and searchable when this returns, for every pipeline served,
        with no reload (:mod:`braid.pipelines.live_collection`). Sharded serving updates its shards' indexes in
        place and swaps in the updated pipeline (``reload=False`` only writes: a broker whose shards are served
        elsewhere). A batch naming one id twice keeps its last version. A write runs to its end whatever the
        ``deadline`` (it is all or nothing); the caller is answered by then."""
        documents = self._check_writes(documents)
        slot = self.registry.slot(pipeline)
        if self.live is not None:
            count = self.live.add([doc.as_document() for doc in documents])
            return count, slot.generation.number
        with slot.lease() as opened:
            count = opened.add_documents([(doc.id, doc.contents) for doc in documents])
            _forget_answers(opened)
        return count, self._reload_slot(slot) if reload else slot.generation.number

    def upsert_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None
    ) -> tuple[int, int]:
        """Add or replace documents by id (Qdrant's upsert, Elasticsearch's index): (doc count, generation)."""
        documents = self._check_writes(documents)
        slot = self.registry.slot(pipeline)
        if self.live is None:
            raise FailedPrecondition("upserts need a live collection; sharded serving takes AddDocuments only")
        return self.live.upsert([doc.as_document() for doc in documents]), slot.generation.number

    def delete_documents(
        self, pipeline: str, ids: Sequence[str], deadline: float | None = None, reload: bool = True
    ) -> tuple[int, int]:
        self.limits.check_count("document ids", len(ids), self.limits.max_update_documents)
        slot = self.registry.slot(pipeline)
        if self.live is not None:
            return self.live.delete(list(ids)), slot.generation.number
        with slot.lease() as opened:
            count = opened.delete_documents(list(ids))
            _forget_answers(opened)
        return count, self._reload_slot(slot) if reload else slot.generation.number

    def _reload_slot(self, slot: PipelineSlot) -> int:
        number = slot.reload(lambda spec: self._open(self._pinned(slot)))
        self.metrics.generation.labels(slot.spec.name).set(number)
        return number

    @staticmethod
    def _pinned(slot: PipelineSlot) -> PipelineSpec:
        """The slot's spec with every stage pinned to the index folder it serves now.

        A reload reopens exactly those folders: a rebuild replaces a folder's contents atomically in place, and an
        index edited through AddDocuments no longer matches the dataset it was built from, so looking the index
        up again by dataset and parameters would find nothing (or try to rebuild it).
        """
        with slot.lease() as pipeline:
            if pipeline.shards > 1:
                return slot.spec  # shards are found by dataset and parameters, under every shard root alike
            retrievers = tuple(replace(s.spec, index=str(s.path)) for s in pipeline.stages)
            cascade = tuple(replace(s.spec, index=str(s.path)) for s in pipeline.cascade)
        return replace(slot.spec, retrievers=retrievers, cascade=cascade)

    def reload(self, pipeline: str = "") -> list[dict[str, Any]]:
        """Reopen one pipeline's indexes (all when ``pipeline`` is empty) and swap them in atomically."""
        slots = [self.registry.slot(pipeline)] if pipeline else self.registry.slots()
        if self.open_shard is not None:
            # The indexes are open in shard deployments' replicas, which a reload here would not touch; their owner
            # (BrokerCore under braid serve --ray) reloads by deploying a new generation of shards and broker.
            raise FailedPrecondition("the indexes are served by shard deployments: reload through their owner")
        for slot in slots:
            self._reload_slot(slot)
        return [self.pipeline_info(slot) for slot in slots]

    def retriever_names(self) -> list[str]:
        """Every served pipeline's retriever names, sorted: the names a request's fusion weights may use."""
        return sorted({retriever.name for slot in self.registry.slots() for retriever in slot.spec.retrievers})

    def pipeline_info(self, slot: PipelineSlot) -> dict[str, Any]:
        generation = slot.generation
        pipeline = generation.pipeline
        spec = slot.spec
        indexes = []
        for path in pipeline.index_paths:
            manifest = Manifest.read(path)
            indexes.append(
                {
                    "path": str(path),
                    "kind": manifest.kind,
                    "doc_count": manifest.doc_count,
                    "bytes": manifest.index_bytes,
                    "created_at": manifest.created_at,
                    "braid_version": manifest.braid_version,
                }
            )
        fusion = pipeline.fusion
        return {
            "name": spec.name,
            "description": spec.description,
            "retrievers": pipeline.retriever_names,
            "fusion": fusion.method if fusion else "",
            "weights": dict(fusion.weights or {}) if fusion else {},
            "rerank": spec.rerank is not None,
            "updatable": pipeline.updatable,
            "doc_count": pipeline.doc_count,
            "fields": dict(pipeline.live.fields) if pipeline.live is not None else {},
            "indexes": indexes,
            "generation": generation.number,
        }

    def list_pipelines(self) -> list[dict[str, Any]]:
        return [self.pipeline_info(slot) for slot in self.registry.slots()]

    def collection_status(self) -> dict[str, Any]:
        if self.live is not None:
            return self.live.status()
        slot = self.registry.slot("")
        documents = slot.generation.pipeline.doc_count
        return {**super().collection_status(), "name": self.dataset.name, "documents": documents}

    def get_documents(self, pipeline: str, ids: Sequence[str], deadline: float | None = None) -> list[NewDocument]:
        """The documents ``ids`` as written (one per distinct id, in the order asked); an id the collection does not
        hold refuses the call (NOT_FOUND, naming it), as DeleteDocuments does."""
        self.limits.check_count("document ids", len(ids), self.limits.max_update_documents)
        slot = self.registry.slot(pipeline)
        wanted = list(dict.fromkeys(ids))
        found: dict[str, NewDocument] = {}
        if self.live is not None:
            for doc_id in wanted:
                document = self.live.document(doc_id)
                if document is not None:
                    found[doc_id] = NewDocument(doc_id, document.text, document.title, document.metadata or None)
        else:  # sharded serving: the text the indexes keep
            with slot.lease() as opened:
                for doc_id in wanted:
                    text = opened.document_text(doc_id)
                    if text is not None:
                        found[doc_id] = NewDocument(doc_id, text, "", None)
        unknown = [doc_id for doc_id in wanted if doc_id not in found]
        if unknown:
            raise UnknownDocuments(f"{len(unknown)} id(s) are not in the collection, e.g. {unknown[:5]}")
        return [found[doc_id] for doc_id in wanted]

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        super().close()
        for batcher in self._batchers.values():
            batcher.close()
        self.registry.close()
        if self.live is not None:
            self.live.close()


def _last_of_each_id(documents: Sequence[NewDocument]) -> list[NewDocument]:
    """One document per id, the last version given, in first-seen order: what an upsert keeps, and what a rerank
    request naming an id twice is answered for (one hit per id)."""
    return list({doc.id: doc for doc in documents}.values())
