"""Pipelines opened over concrete indexes: first-stage retrievers run concurrently, their lists are fused,
cascade stages rescore the head, and every hit can say where it came from.

The definition (TOML or Python) lives in :mod:`braid.pipelines.spec`; this module runs it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError, DeadlineExceeded, Unsupported
from braid.common.passages import document_of
from braid.indexer.encoding_threads import encoding_threads
from braid.indexer.index_kind import IndexKind
from braid.indexer.index_store import build_index, find_index
from braid.indexer.kinds import index_kind, settle_updates, updatable_kinds
from braid.indexer.manifest import MANIFEST_NAME, Manifest
from braid.indexer.serving_shards import check_shard, shard_roots
from braid.indexer.shard_routing import route_additions, route_deletions
from braid.indexer.update_transaction import Change, commit_changes
from braid.pipelines.live_collection import LiveCollection, has_writes
from braid.pipelines.spec import (
    PipelineSpec,
    RetrieverSpec,
    builtin_pipelines,
    coerce,
    counted_retrievers,
    feeders,
    load_pipeline,
    parse_pipeline,
    parse_retriever,
)
from braid.ranker.protocol import Reranker
from braid.retriever.fusion import FusionSpec, ListShape, check_weight_total, fuse, fuse_with_first_stage, fused, ranked
from braid.retriever.hit import Hit, RankedList
from braid.retriever.kinds import RETRIEVER_KINDS
from braid.retriever.protocol import Retriever, Scorer
from braid.retriever.sharded_retriever import Shard, ShardedRetriever

__all__ = [
    "ExplainedHit",
    "Pipeline",
    "PipelineSpec",
    "RetrieverSpec",
    "SearchOptions",
    "builtin_pipelines",
    "check_query",
    "load_pipeline",
    "open_index_retriever",
    "open_pipeline",
    "parse_pipeline",
    "parse_retriever",
]


@dataclass(frozen=True)
class Source:
    """One retriever's view of a hit: its 1-based rank and raw score, or None where it did not retrieve it, and its
    term of the fused score (weight x RRF term or normalized score; the terms sum to the fused score)."""

    rank: int | None
    score: float | None
    contribution: float | None = None


@dataclass
class ExplainedHit:
    """A hit with its provenance: each retriever's rank and score, the fused score, each cascade stage's score."""

    doc_id: str
    score: float
    sources: dict[str, Source]
    fused_score: float | None = None
    stages: dict[str, float] = field(default_factory=dict)
    passage: str | None = None  # in a collection of passages: the best passage of the document ``doc_id``

    def to_json(self) -> dict[str, Any]:
        row = {
            "doc_id": self.doc_id,
            "score": self.score,
            "retrievers": {name: {"rank": s.rank, "score": s.score} for name, s in self.sources.items()},
            "fused_score": self.fused_score,
            "cascade": self.stages,
        }
        if self.passage is not None:
            row["passage"] = self.passage
        return row


@dataclass(frozen=True)
class SearchOptions:
    """Per-request overrides of a pipeline's settings (what a service exposes per call).

    ``weights``: fusion weights by retriever name for this request (names left out keep their configured weight);
    ``rerank_depth``: how many head hits the reranker rescores (0 skips it); ``deadline``: a ``time.monotonic()``
    instant checked before every stage, so a request whose caller has given up stops at the next stage boundary.
    """

    weights: Mapping[str, float] | None = None
    rerank_depth: int | None = None
    deadline: float | None = None
    # A metadata filter (braid.common.metadata_schema): only matching documents are returned, each retriever
    # leaving the others out inside its search.
    filter: Mapping[str, Any] | None = None

    def check_deadline(self, stage: str) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise DeadlineExceeded(f"deadline exceeded before {stage}")


NO_OPTIONS = SearchOptions()


R = TypeVar("R", bound=Retriever)
T = TypeVar("T")
H = TypeVar("H", Hit, ExplainedHit)


@dataclass
class _Stage(Generic[R]):
    """A retriever opened for a pipeline: a first-stage :class:`Retriever`, or a cascade stage's :class:`Scorer`."""

    spec: RetrieverSpec
    retriever: R
    path: Path
    shard_paths: tuple[Path, ...] = ()  # a sharded pipeline's index folder in each shard, in order (path: shard 0's)

    @property
    def index_shards(self) -> tuple[Path, ...]:
        return self.shard_paths or (self.path,)


class Pipeline:
    """A pipeline opened over concrete indexes, ready to search."""

    def __init__(
        self,
        spec: PipelineSpec,
        stages: list[_Stage[Retriever]],
        cascade: list[_Stage[Scorer]],
        doc_count: int,
        reranker: Reranker | None = None,
        texts: Callable[[str], str | None] | None = None,
        dataset: str = "",
    ) -> None:
        self.spec = spec
        self.dataset = dataset
        # The fusion tuned for this collection when the pipeline file has one, else the pipeline's [fusion].
        self.fusion = spec.fusion_for(dataset)
        self.stages = stages
        self.cascade = cascade
        self._doc_count = doc_count
        # A collection that takes writes (:mod:`braid.pipelines.live_collection`): its retrievers follow every write,
        # and the document count is its live count. ``owns_live``: opened by this pipeline, closed with it.
        self.live: LiveCollection | None = None
        self.owns_live = False
        self.reranker = reranker
        self._texts = texts
        self.shards = 1  # serving shards its retrievers search (open_pipeline sets it)
        # The indexes hold passages of longer documents: hits are documents, each at its best passage (MaxP).
        self.passages = False
        # Independent first-stage retrievers run side by side; Lucene, faiss and torch release the GIL. No more of
        # them at once than there are cores: the pool is shared by concurrent requests, and on 2 cores a third
        # worker only interleaved the hybrid's stages (in-process, 8 and 32 client threads: 6-8% less wall time a
        # query with 2 workers than with 3, the same latency one query at a time; with 24, 26-37% more).
        workers = min(len(stages), os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def depth(self) -> int:
        return self.spec.depth

    @property
    def retriever_names(self) -> list[str]:
        return [stage.spec.name for stage in self.stages]

    @property
    def doc_count(self) -> int:
        return self.live.doc_count if self.live is not None else self._doc_count

    @property
    def list_shapes(self) -> list[ListShape]:
        """What fusion knows of each retriever's list: the depth it is fetched to, and the score of the documents a
        sparse retriever does not match (a list shorter than its depth ran out of matches)."""
        return self._shapes(self.stages)

    def _shapes(self, stages: Sequence[_Stage[Retriever]]) -> list[ListShape]:
        return [ListShape(min(s.spec.depth, self.doc_count), s.spec.kind_info.unmatched_score) for s in stages]

    @property
    def index_paths(self) -> list[Path]:
        return list(dict.fromkeys(stage.path for stage in [*self.stages, *self.cascade]))

    def index_bytes(self) -> int:
        return sum(Manifest.read(path).index_bytes for path in self.index_paths)

    def build_docs_per_second(self) -> float | None:
        """Build throughput of the pipeline's indexes taken together (documents / total build seconds)."""
        manifests = [Manifest.read(path) for path in self.index_paths]
        seconds = [m.build_seconds for m in manifests]
        if not manifests or any(not value for value in seconds):
            return None
        return manifests[0].doc_count / sum(seconds)

    def index_builds(self) -> list[dict]:
        """Each index's build as its manifest recorded it: kind, documents, seconds, documents/s and peak RSS (None
        for an index built before braid measured it, or by a build job)."""
        builds = []
        for path in self.index_paths:
            manifest = Manifest.read(path)
            rate = manifest.docs_per_second
            builds.append(
                {
                    "kind": manifest.kind,
                    "index": path.name,
                    "documents": manifest.doc_count,
                    "build_seconds": manifest.build_seconds,
                    "docs_per_s": None if rate is None else round(rate, 2),
                    "peak_rss_bytes": manifest.build.get("peak_rss_bytes"),
                }
            )
        return builds

    def check_k(self, k: int) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > self.doc_count:
            raise BraidError(f"k must be between 1 and the collection's {self.doc_count} documents, got {k!r}")

    def check_options(self, options: SearchOptions) -> None:
        """Reject overrides this pipeline cannot apply, naming what it allows."""
        # A bad value is a bad argument whatever the pipeline; what this pipeline cannot do (weights without fusion,
        # reranking without a reranker) is Unsupported: the same request is fine on a pipeline that has the stage
        # (the service answers FAILED_PRECONDITION).
        depth = options.rerank_depth
        if depth is not None and (not isinstance(depth, int) or isinstance(depth, bool) or depth < 0):
            raise BraidError(f"rerank_depth must be an integer >= 0 (0: no reranking), got {depth!r}")
        if options.weights:
            for name, weight in options.weights.items():
                if not isinstance(weight, int | float) or not math.isfinite(weight) or weight < 0:
                    raise BraidError(f"weights[{name!r}] must be a finite number >= 0, got {weight!r}")
            if self.fusion is None:
                raise Unsupported(f"pipeline {self.name!r} has a single retriever: it takes no fusion weights")
            unknown = sorted(set(options.weights) - set(self.retriever_names))
            if unknown:
                raise BraidError(
                    f"unknown retriever(s) {', '.join(map(repr, unknown))} in weights for pipeline {self.name!r} "
                    f"(allowed: {', '.join(self.retriever_names)})"
                )
            check_weight_total(self._fusion(options), self.retriever_names, f"this request's weights for {self.name!r}")
        # 0 asks for no reranking, which every pipeline does without a reranker; a depth beyond the collection
        # reranks all of it, as a k beyond it returns all of it.
        if depth and self.reranker is None:
            raise Unsupported(f"pipeline {self.name!r} has no reranker: rerank_depth does not apply")
        self._hidden(options)  # an invalid filter fails here, before any search runs

    def _hidden(self, options: SearchOptions) -> frozenset[str]:
        """The live documents ``options.filter`` leaves out (none without a filter)."""
        if options.filter is None:
            return frozenset()
        if self.live is None:
            raise BraidError(
                f"{self.dataset!r} declares no metadata fields to filter on; declare them at creation: "
                "braid collection create NAME --from FILE --field NAME:TYPE"
            )
        return self.live.hidden(options.filter)

    def _rerank_depth(self, options: SearchOptions) -> int:
        if self.reranker is None:
            return 0
        return self.spec.rerank.depth if options.rerank_depth is None else min(options.rerank_depth, self.doc_count)

    def _fusion(self, options: SearchOptions) -> FusionSpec | None:
        if not options.weights:
            return self.fusion
        configured = self.fusion.weights or {}
        weights = {name: float(options.weights.get(name, configured.get(name, 1.0))) for name in self.retriever_names}
        return dataclasses.replace(self.fusion, weights=weights)

    # -- one query ---------------------------------------------------------------------------------------------

    def _fetch(self, k: int, options: SearchOptions = NO_OPTIONS) -> int:
        head = max((stage.spec.depth for stage in self.cascade), default=0)
        # Several passages of one document can rank together; fetching more leaves k documents after MaxP.
        wanted = k * PASSAGE_FETCH if self.passages else k
        return max(wanted, head, self._rerank_depth(options))

    def _stage_depth(self, stage: _Stage[Retriever], k: int, options: SearchOptions = NO_OPTIONS) -> int:
        # Fused lists always go to their configured depth: normalization statistics depend on it, and tuning
        # saw exactly those lists. A lone retriever only needs what the caller and the cascade will read.
        depth = self._fetch(k, options) if self.fusion is None else stage.spec.depth
        return min(depth, self.doc_count)

    def _counted(self, fusion: FusionSpec | None) -> list[_Stage[Retriever]]:
        """The first-stage retrievers a query runs under ``fusion``: those whose lists count
        (:func:`~braid.pipelines.spec.counted_retrievers`). A retriever at weight 0 (in the collection's fusion, or
        in a request's weights) neither runs nor shows in explanations: a pipeline can hold lists that only some
        collections' fusions weigh (hybrid-max's per-collection fits) at no cost elsewhere. Tuning reads every list
        (:meth:`first_stage_lists`)."""
        kept = {spec.name for spec in counted_retrievers([stage.spec for stage in self.stages], fusion)}
        return [stage for stage in self.stages if stage.spec.name in kept]

    def _feeders(self, stage: _Stage[Retriever]) -> tuple[str, ...]:
        # Those _counted runs whenever this stage counts: the lists its candidates come from are always there.
        return feeders(stage.spec, [other.spec for other in self.stages])

    def _each_stage(self, run: Callable[[_Stage[Retriever]], T], stages: list[_Stage[Retriever]]) -> list[T]:
        """``run(stage)`` for each of ``stages``, concurrently when there are several."""
        return list(self._pool.map(run, stages)) if self._pool and len(stages) > 1 else [run(s) for s in stages]

    def _rescored(self, stage: _Stage[Retriever], query: str, lists: Sequence[list[Hit] | RankedList]) -> RankedList:
        """A rescoring retriever's list: its exact scores of the union of ``lists``' top ``scores_top`` documents."""
        assert isinstance(stage.retriever, Scorer)  # open_pipeline admits only scorers to scores_top (_scoring)
        depth = stage.spec.scores_top
        candidates = itertools.chain.from_iterable(
            (item.ids if isinstance(item, RankedList) else [hit.doc_id for hit in item])[:depth] for item in lists
        )
        ids = list(dict.fromkeys(candidates))
        if not ids:
            return RankedList([], np.zeros(0, dtype=np.float64))
        top = ranked(ids, np.asarray(stage.retriever.score(query, ids), dtype=np.float64), len(ids))
        return RankedList([ids[row] for row, _ in top], np.array([score for _, score in top], dtype=np.float64))

    def _first_stage(
        self, query: str, k: int, timings: dict[str, float], options: SearchOptions = NO_OPTIONS
    ) -> dict[str, list[Hit] | RankedList]:
        """The lists of the retrievers that count under this request's fusion, by name in the pipeline's order."""
        options.check_deadline("retrieval")

        hidden = self._hidden(options)
        stages = self._counted(self._fusion(options))
        searching = [stage for stage in stages if not stage.spec.scores_top]
        threads = _encoding_threads(searching)

        def run(stage: _Stage[Retriever]) -> tuple[list[Hit] | RankedList, float]:
            tick = time.perf_counter()
            depth = self._stage_depth(stage, k, options)
            # Fused lists stay arrays (1,000 hits each); a lone retriever's few hits become Hit objects.
            search = stage.retriever.search if self.fusion is None else stage.retriever.search_ranked
            # A filter goes to the live view's segmented retrievers, the only ones a filter can reach.
            with encoding_threads(threads):
                hits = (partial(search, hidden=hidden) if hidden else search)(query, depth)
            return hits, (time.perf_counter() - tick) * 1000

        results = self._each_stage(run, searching)
        found: dict[str, list[Hit] | RankedList] = {}
        for stage, (hits, ms) in zip(searching, results, strict=True):
            timings[f"retriever.{stage.spec.name}"] = ms
            found[stage.spec.name] = hits
        for stage in stages:
            if stage.spec.scores_top:
                tick = time.perf_counter()
                found[stage.spec.name] = self._rescored(stage, query, [found[n] for n in self._feeders(stage)])
                timings[f"retriever.{stage.spec.name}"] = (time.perf_counter() - tick) * 1000
        return {stage.spec.name: found[stage.spec.name] for stage in stages}

    def _combine(
        self,
        query: str,
        found: Mapping[str, list[Hit] | RankedList],
        k: int,
        timings: dict[str, float],
        options: SearchOptions = NO_OPTIONS,
    ) -> list[ExplainedHit]:
        tick = time.perf_counter()
        fetch = self._fetch(k, options)
        if self.fusion is None:
            name, hits_in = next(iter(found.items()))
            hits = [
                ExplainedHit(hit.doc_id, hit.score, {name: Source(rank, hit.score)})
                for rank, hit in enumerate(hits_in[:fetch], 1)
            ]
        else:
            fusion = self._fusion(options)
            names = list(found)
            shapes = self._shapes([stage for stage in self.stages if stage.spec.name in found])
            inputs, top = fused(list(found.values()), names, fusion, fetch, shapes)
            rows = [row for row, _ in top]
            # Whole rows to Python at once: per-cell numpy indexing cost more than the fusion itself.
            ranks, scores = inputs.ranks[rows].tolist(), inputs.scores[rows].tolist()
            terms = (inputs.values[rows] * fusion.weight_vector(names)).tolist()
            hits = []
            for (row, score), row_ranks, row_scores, row_terms in zip(top, ranks, scores, terms, strict=True):
                sources = {
                    name: Source(rank or None, None if math.isnan(raw) else raw, term)
                    for name, rank, raw, term in zip(names, row_ranks, row_scores, row_terms, strict=True)
                }
                hits.append(ExplainedHit(inputs.doc_ids[row], score, sources, fused_score=score))
            timings["fusion"] = (time.perf_counter() - tick) * 1000
        for stage in self.cascade:
            options.check_deadline(f"cascade stage {stage.spec.name}")
            tick = time.perf_counter()
            hits = rescore_head(
                hits, stage.spec.name, stage.spec.depth, lambda ids, s=stage: s.retriever.score(query, ids)
            )
            timings[f"cascade.{stage.spec.name}"] = (time.perf_counter() - tick) * 1000
        rerank_depth = self._rerank_depth(options)
        if rerank_depth:
            options.check_deadline("rerank")
            tick = time.perf_counter()
            first_stage = [hit.score for hit in hits[:rerank_depth]]
            hits = rescore_head(
                hits, "rerank", rerank_depth, lambda ids: self._rerank_scores(query, ids, first_stage, options.deadline)
            )
            timings["rerank"] = (time.perf_counter() - tick) * 1000
        return per_document(hits)[:k] if self.passages else hits[:k]

    def _rerank_scores(
        self, query: str, doc_ids: list[str], first_stage: Sequence[float], deadline: float | None = None
    ) -> list[float] | np.ndarray:
        """The reranker's scores for ``doc_ids`` in their given order (rescore_head sorts them), fused with the
        first stage's ``first_stage`` scores of the same documents when the reranker asks for it."""
        docs = [(doc_id, self.document_text(doc_id) or "") for doc_id in doc_ids]
        ranked = dict(self.reranker.rerank(query, docs, deadline=deadline))
        scores = [ranked[doc_id] for doc_id in doc_ids]
        weight = self.reranker.fusion_weight
        if weight is None:
            return scores
        return fuse_with_first_stage(scores, first_stage, weight)

    def search_explained(
        self, query: str, k: int | None = None, options: SearchOptions = NO_OPTIONS
    ) -> tuple[list[ExplainedHit], dict[str, float]]:
        """Top ``k`` hits (default: 10, or the whole collection when smaller) with their provenance, and the
        milliseconds each stage took. An explicit ``k`` of 0 or beyond the collection is an error."""
        check_query(query)
        k = min(10, self.doc_count) if k is None else k
        self.check_k(k)
        self.check_options(options)
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        hits = self._combine(query, self._first_stage(query, k, timings, options), k, timings, options)
        timings["total"] = (time.perf_counter() - tick) * 1000
        return hits, timings

    def search(self, query: str, k: int | None = None) -> list[Hit]:
        hits, _ = self.search_explained(query, k)
        return [Hit(hit.doc_id, hit.score) for hit in hits]

    def search_timed(self, query: str, k: int | None = None) -> tuple[list[Hit], dict[str, float]]:
        hits, timings = self.search_explained(query, k)
        return [Hit(hit.doc_id, hit.score) for hit in hits], timings

    # -- many queries ------------------------------------------------------------------------------------------

    def first_stage_lists(
        self, queries: Mapping[str, str], k: int, stages: Sequence[_Stage[Retriever]] | None = None
    ) -> list[dict[str, list[Hit]]]:
        """Each retriever's ranked lists for every query, for every retriever (what tuning reads) or for ``stages``
        (batched per retriever, retrievers concurrently; a rescoring retriever's after the others, over their
        candidates)."""
        stages = self.stages if stages is None else stages
        searching = [stage for stage in stages if not stage.spec.scores_top]
        lists = self._each_stage(
            lambda stage: stage.retriever.batch_search(queries, self._stage_depth(stage, k)), searching
        )
        found = {stage.spec.name: per_query for stage, per_query in zip(searching, lists, strict=True)}
        qids = list(queries)
        for stage in stages:
            if stage.spec.scores_top:
                feeding = [found[name] for name in self._feeders(stage)]

                def rescore(qid: str, stage: _Stage[Retriever] = stage, feeding: list = feeding) -> list[Hit]:
                    return self._rescored(stage, queries[qid], [per_query.get(qid, []) for per_query in feeding]).hits()

                with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                    found[stage.spec.name] = dict(zip(qids, pool.map(rescore, qids), strict=True))
        return [found[stage.spec.name] for stage in stages]

    def batch_search(self, queries: Mapping[str, str], k: int | None = None) -> dict[str, list[Hit]]:
        """Top ``k`` (default: the pipeline's depth) for each query; ``k`` is capped at the collection size."""
        k = min(k or self.depth, self.doc_count)
        if k < 1:
            raise BraidError(f"k must be >= 1, got {k}")
        stages = self._counted(self.fusion)
        lists = self.first_stage_lists(queries, k, stages)
        names = [stage.spec.name for stage in stages]
        if not self.cascade and self.reranker is None:
            if self.fusion is None:
                return {qid: best_passages(hits)[:k] for qid, hits in lists[0].items()} if self.passages else lists[0]
            # No explanations to build: at a depth of 1000, ExplainedHit rows cost more than the retrieval itself.
            spec, shapes = self.fusion, self._shapes(stages)
            depth = k * PASSAGE_FETCH if self.passages else k
            fused_lists = {
                qid: fuse([per_query.get(qid, []) for per_query in lists], names, spec, depth, shapes)
                for qid in queries
            }
            if self.passages:
                return {qid: best_passages(hits)[:k] for qid, hits in fused_lists.items()}
            return fused_lists
        results = {}
        items = queries.items()
        if self.reranker is not None:  # an LLM per query: seconds each on a CPU
            items = tqdm(items, desc=f"rerank {self.name}", unit="q", file=sys.stderr, leave=False)
        for qid, text in items:
            found = {name: per_query.get(qid, []) for name, per_query in zip(names, lists, strict=True)}
            hits = self._combine(text, found, k, {})
            results[qid] = [Hit(hit.doc_id, hit.score) for hit in hits]
        return results

    def document_text(self, doc_id: str) -> str | None:
        if self._texts is not None:
            return self._texts(doc_id)
        for stage in self.stages:
            text = stage.retriever.document_text(doc_id)
            if text is not None:
                return text
        return None

    # -- document updates --------------------------------------------------------------------------------------

    @property
    def updatable(self) -> bool:
        """Whether the pipeline takes document writes: over a live collection always, else where every index of
        it takes document updates in place."""
        return self.live is not None or all(kind.updates is not None for kind in self._index_kinds.values())

    def add_documents(self, documents: Sequence[tuple[str, str]]) -> int:
        """Add (id, text) documents to every index of the pipeline; returns the new document count.

        The indexes change on disk, all of them or none (:mod:`braid.indexer.update_transaction`); a sharded
        pipeline's new documents go to their home shards (:mod:`braid.indexer.shard_routing`). This opened pipeline
        keeps serving what it opened, and a pipeline opened afterwards (a service's reload) serves the change.
        """
        return self._update(lambda shard_ids: route_additions(shard_ids, documents), "add")

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete documents by id from every index of the pipeline (each from the shard holding it); returns the new
        document count."""
        return self._update(lambda shard_ids: route_deletions(shard_ids, doc_ids), "delete")

    @cached_property
    def _index_kinds(self) -> dict[Path, IndexKind]:
        # An opened pipeline's index folders never change kind (a reload opens a new Pipeline): read manifests once.
        return {path: index_kind(Manifest.read(path).kind) for path in self.index_paths}

    def _update(self, route: Callable[[list[set[str]]], list[list]], action: str) -> int:
        kinds = self._index_kinds
        fixed = sorted({kind.name for kind in kinds.values() if kind.updates is None})
        if fixed:
            raise Unsupported(
                f"pipeline {self.name!r} uses {', '.join(fixed)} indexes, which take no updates (updatable: "
                f"{', '.join(updatable_kinds())}); rebuild the index and reload instead"
            )
        # Every index of the pipeline, as its shards' folders (one folder when unsharded); all of them change in one
        # transaction, so no reader sees one index or shard updated and another not.
        indexes = list(dict.fromkeys(stage.index_shards for stage in [*self.stages, *self.cascade]))
        changes = []
        for shards in indexes:
            updates = kinds[shards[0]].updates
            assert updates is not None  # checked above, for every index before any changes
            parts = route([set(updates.doc_ids(path)) for path in shards])
            for path, part in zip(shards, parts, strict=True):
                if part:
                    changes.append(Change(path, updates, **{action: part}))
        counts = commit_changes(changes)
        return sum(counts[path] if path in counts else Manifest.read(path).doc_count for path in indexes[0])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        for stage in self.stages:
            if isinstance(stage.retriever, ShardedRetriever):
                stage.retriever.close()
        if self.live is not None:
            for stage in [*self.stages, *self.cascade]:
                self.live.forget(stage.retriever)
            if self.owns_live:
                self.live.close()


#: How many passages a search of a passage collection fetches per document it is asked for.
PASSAGE_FETCH = 4


def _encoding_threads(searching: Sequence[_Stage[Retriever]]) -> int | None:
    """Torch threads for each query encoder among ``searching``: encoders that run at once share the cores rather
    than each starting a pool of all of them (None: one encoder, the default pool)."""
    encoders = sum(stage.spec.kind_info.encodes_queries for stage in searching)
    return max(1, (os.cpu_count() or 1) // encoders) if encoders > 1 else None


def _first_per_document(hits: Sequence[H]) -> Iterator[tuple[str, H]]:
    """Each document's first hit in ranked order, with the document's id: its best passage (MaxP)."""
    seen: set[str] = set()
    for hit in hits:
        doc_id = document_of(hit.doc_id)
        if doc_id not in seen:
            seen.add(doc_id)
            yield doc_id, hit


def per_document(hits: Sequence[ExplainedHit]) -> list[ExplainedHit]:
    """Each document once, at its best passage, naming it: MaxP (:mod:`braid.common.passages`)."""
    return [dataclasses.replace(hit, doc_id=doc_id, passage=hit.doc_id) for doc_id, hit in _first_per_document(hits)]


def best_passages(hits: Sequence[Hit]) -> list[Hit]:
    """:func:`per_document` for plain hits (batch runs, whose qrels judge documents)."""
    return [Hit(doc_id, hit.score) for doc_id, hit in _first_per_document(hits)]


def rescore_head(
    hits: Sequence[ExplainedHit], name: str, depth: int, score: Callable[[list[str]], Sequence[float] | np.ndarray]
) -> list[ExplainedHit]:
    """Rescore the top ``depth`` hits with ``score(doc_ids)``; the rest keep their order, scored below the head.

    This is what a cascade stage does: the head's order comes from the more precise scorer alone, as if it had
    been run over exactly those candidates.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if not head:
        return []
    scores = np.asarray(score([hit.doc_id for hit in head]), dtype=np.float64)
    rescored = []
    for row, value in ranked([hit.doc_id for hit in head], scores, len(head)):
        hit = head[row]
        rescored.append(ExplainedHit(hit.doc_id, value, hit.sources, hit.fused_score, {**hit.stages, name: value}))
    floor = rescored[-1].score
    for offset, hit in enumerate(tail, 1):
        rescored.append(ExplainedHit(hit.doc_id, floor - offset, hit.sources, hit.fused_score, dict(hit.stages)))
    return rescored


def check_query(query: str) -> None:
    if not query or not query.strip():
        raise BraidError("empty query: give some query text")


def _named_index(spec: RetrieverSpec, role: str) -> Path:
    """An index named by path in the pipeline file: it must be built, of the right kind, with these settings."""
    path = Path(spec.index)
    if not (path / MANIFEST_NAME).is_file():
        raise BraidError(
            f"{role} {spec.name!r} names index {path}, which is not built (no {MANIFEST_NAME}); "
            f"build it with: braid index build --kind {spec.kind_info.index.name} --output {path} --dataset ..."
        )
    manifest = Manifest.read(path)
    if manifest.kind != spec.kind_info.index.name:
        raise BraidError(f"{role} {spec.name!r}: {path} is a {manifest.kind} index, not {spec.kind_info.index.name}")
    for name, value in spec.index_params().items():
        if manifest.params.get(name) != value:
            raise BraidError(
                f"{role} {spec.name!r}: {path} was built with {name}={manifest.params.get(name)!r}, not {value!r}"
            )
    return path


#: Opens shard ``i``'s retriever for a stage over the index at ``path`` (a local retriever, or a remote shard).
ShardOpener = Callable[[int, RetrieverSpec, Path], Shard]


def open_local_shard(threads: int | None = None) -> ShardOpener:
    def open_shard(index: int, spec: RetrieverSpec, path: Path) -> Shard:
        return spec.kind_info.open(path, spec.search_params(), threads)

    return open_shard


def open_pipeline(
    spec: PipelineSpec,
    dataset: Dataset,
    index_root: Path,
    threads: int | None = None,
    build_missing: bool = True,
    shards: int = 1,
    open_shard: ShardOpener | None = None,
    live: LiveCollection | None = None,
    follow_writes: bool = True,
) -> Pipeline:
    """Find (or build) every index the pipeline needs and open its retrievers.

    ``live``: the collection's write side (a server's); its retrievers then follow every write. Without one, a
    collection that has logged writes is opened to search them as they are now (read only), unless
    ``follow_writes`` is False (the indexes of ``dataset`` exactly as given: an optimize building a new base).

    ``shards`` > 1: the indexes are the serving shards a build job wrote under ``index_root``
    (:mod:`braid.indexer.serving_shards`); every retriever becomes a :class:`ShardedRetriever` over shards opened
    by ``open_shard`` (in this process by default), and fusion and reranking run once, on the merged lists.
    """
    if shards > 1:
        return _open_sharded(spec, dataset, index_root, shards, open_shard or open_local_shard(threads))
    # A collection with writes logged, or with metadata fields to filter on, is searched through its live view.
    owns_live = live is None and follow_writes and (has_writes(dataset, index_root) or bool(dataset.fields))
    if owns_live:
        live = LiveCollection(dataset, index_root, threads, writable=False)
    try:
        pipeline = _open_unsharded(spec, live.dataset if live else dataset, index_root, threads, build_missing, live)
    except BaseException:
        if owns_live and live is not None:
            live.close()
        raise
    pipeline.owns_live = owns_live
    return pipeline


def _open_unsharded(
    spec: PipelineSpec,
    dataset: Dataset,
    index_root: Path,
    threads: int | None,
    build_missing: bool,
    live: LiveCollection | None,
) -> Pipeline:
    opened: dict[tuple, Retriever] = {}

    def open_stage(stage_spec: RetrieverSpec, role: str) -> _Stage[Retriever]:
        info = stage_spec.kind_info
        if stage_spec.index is not None:
            path = _named_index(stage_spec, role)
        else:
            path = find_index(dataset, info.index.name, stage_spec.index_params(), index_root)
        if path is None:
            if not build_missing:
                raise BraidError(
                    f"no {info.index.name} index for {dataset.name} under {index_root} ({role} {stage_spec.name!r}); "
                    f"run: braid index build --dataset {dataset.name} --kind {info.index.name}"
                )
            path, _, _ = build_index(
                dataset, info.index.name, stage_spec.index_params(), index_root=index_root, threads=threads
            )
        # A cascade scorer over the same index as a first-stage retriever shares its opened searcher.
        key = (stage_spec.kind, str(path), tuple(sorted(stage_spec.search_params().items())))
        if key not in opened:
            if live is not None:
                opened[key] = live.retriever(info, Path(path), stage_spec.search_params())
            else:
                opened[key] = info.open(path, stage_spec.search_params(), threads)
        return _Stage(stage_spec, opened[key], Path(path))

    stages = [open_stage(item, "retriever") for item in spec.retrievers]
    for stage in stages:
        if stage.spec.scores_top:
            _scoring(stage, "retriever")
    cascade = [_scoring(open_stage(item, "cascade stage")) for item in spec.cascade]
    manifests = {stage.path: Manifest.read(stage.path) for stage in [*stages, *cascade]}
    checksums = {manifest.corpus_checksum for manifest in manifests.values()}
    if len(checksums) > 1:
        listing = ", ".join(f"{path} ({m.doc_count} docs)" for path, m in manifests.items())
        raise BraidError(f"pipeline {spec.name!r} mixes indexes of different collections: {listing}")
    doc_count = next(iter(manifests.values())).doc_count
    reranker = texts = None
    if spec.rerank is not None:
        from braid.ranker.reranker import shared_ranker  # torch and transformers load only for pipelines that rerank

        reranker = shared_ranker(spec.rerank)
        texts = _corpus_texts(dataset)
    if live is not None:
        texts = live.text  # written documents too
    pipeline = Pipeline(spec, stages, cascade, doc_count, reranker, texts, dataset.name)
    pipeline.passages = dataset.passages is not None
    pipeline.live = live
    return pipeline


def _open_sharded(
    spec: PipelineSpec, dataset: Dataset, index_root: Path, shards: int, open_shard: ShardOpener
) -> Pipeline:
    if spec.cascade:
        raise Unsupported(f"pipeline {spec.name!r} has cascade stages, which do not run over sharded indexes yet")
    rescoring = [stage.name for stage in spec.retrievers if stage.scores_top]
    if rescoring:
        raise Unsupported(f"pipeline {spec.name!r}: rescoring retrievers ({', '.join(rescoring)}) need one index")
    roots = shard_roots(index_root, shards)
    stages = []
    doc_count = 0
    for stage_spec in spec.retrievers:
        if stage_spec.index is not None:
            raise Unsupported(f"retriever {stage_spec.name!r} names one index ({stage_spec.index}); shards need none")
        info = stage_spec.kind_info
        paths = []
        for index, root in enumerate(roots):
            path = find_index(dataset, info.index.name, stage_spec.index_params(), root, edited=True)
            if path is None:
                raise BraidError(
                    f"no {info.index.name} index for {dataset.name} in shard {index} of {shards} under {index_root} "
                    f"(retriever {stage_spec.name!r}); build them with shards = {shards} in a build config: "
                    "braid index build --config BUILD.toml"
                )
            check_shard(path, index, shards)
            settle_updates(path)  # an update interrupted mid-way: finished or undone before counts are read
            paths.append(path)
        count = sum(Manifest.read(path).doc_count for path in paths)
        doc_count = max(doc_count, count)
        members = [open_shard(index, stage_spec, path) for index, path in enumerate(paths)]
        retriever = ShardedRetriever(stage_spec.kind, members, stage_spec.search_params(), count)
        stages.append(_Stage(stage_spec, retriever, paths[0], tuple(paths)))
    reranker = texts = None
    if spec.rerank is not None:
        from braid.ranker.reranker import shared_ranker

        reranker = shared_ranker(spec.rerank)
        texts = _corpus_texts(dataset)
    pipeline = Pipeline(spec, stages, [], doc_count, reranker, texts, dataset.name)
    pipeline.shards = shards
    pipeline.passages = dataset.passages is not None
    return pipeline


def _scoring(stage: _Stage[Retriever], role: str = "cascade stage") -> _Stage[Scorer]:
    # parse_retriever admits only scoring kinds to a cascade and to scores_top; this is where the type says so.
    if not isinstance(stage.retriever, Scorer):
        raise BraidError(f"{role} {stage.spec.name!r}: a {stage.spec.kind} retriever cannot score documents")
    return _Stage(stage.spec, stage.retriever, stage.path)


def _corpus_texts(dataset: Dataset) -> Callable[[str], str | None]:
    """Document text by id for the reranker, read from the collection on first use (title, then text)."""
    corpus: dict[str, str] = {}
    lock = threading.Lock()

    def text(doc_id: str) -> str | None:
        with lock:  # concurrent first queries must not read a half-filled map
            if not corpus:
                corpus.update((doc.doc_id, doc.contents) for doc in dataset.iter_corpus())
        return corpus.get(doc_id)

    return text


def open_index_retriever(index_dir: Path, search_params: Mapping[str, Any], threads: int | None = None) -> Retriever:
    """Open a retriever directly over an index folder, choosing the kind from its manifest."""
    manifest = Manifest.read(index_dir)
    kinds = [info for info in RETRIEVER_KINDS.values() if info.index.name == manifest.kind]
    if not kinds:
        raise BraidError(f"{index_dir}: no retriever can search a {manifest.kind!r} index")
    info = kinds[0]
    for name, value in search_params.items():
        if name in info.index_params:
            # Build-time settings are fixed by the index: asking for another value (say, another encoder) is
            # an error, not something to ignore silently.
            built = manifest.params.get(name)
            if built != value:
                raise BraidError(f"{index_dir} was built with {name}={built!r}, not {value!r}; build an index for it")
        elif name not in info.search_params:
            allowed = ", ".join(sorted(info.params))
            raise BraidError(f"unknown parameter {name!r} for a {manifest.kind} index (allowed: {allowed})")
    params = {
        name: coerce(str(index_dir), name, search_params.get(name, p.default), p.type)
        for name, p in info.search_params.items()
    }
    return info.open(Path(index_dir), params, threads)
