"""The broker as a Ray Serve deployment: fan-out, merging, fusion and reranking in replicas of their own.

Under ``braid serve --ray``, every generation of shard deployments (:class:`~braid.service.ray_serving.RayShards`)
gets a broker deployment beside it, ``braid-g<N>-broker``, with R replicas (:class:`BrokerReplica`). A broker
replica opens every served pipeline over that generation's shard applications (its retrievers are
:class:`~braid.retriever.sharded_retriever.ShardedRetriever` objects over
:class:`~braid.service.ray_serving.RemoteShard` handles) and answers with the same
:class:`~braid.service.core.SearchCore` one process uses, so a query fans out to every shard, each retriever's
per-shard lists merge into one list, and fusion and reranking run once, exactly as in one process.

The ``braid serve`` process keeps the API (gRPC and HTTP, auth, admission, deadlines, metrics) and holds no index:
:class:`BrokerCore` forwards each operation to the broker deployment, where Ray Serve picks a live replica, retries
a call that hit a dying one and restarts dead ones, as it does for the shards (:class:`~braid.service.ray_serving
.ServeCall`). More API processes can run over the same deployments behind a load balancer.

A reload deploys a new generation of shards and broker together (blue/green: all of it comes up or none of it is
kept) and switches the API to it in one step; the old generation is deleted once no request uses it. A document
update is written by a broker replica to every shard's indexes in one transaction (all shards or none:
:mod:`braid.indexer.update_transaction`) and then served the same way, by a new generation.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.pipelines.spec import PipelineSpec
from braid.service.core import (
    AuthConfig,
    CoreBase,
    NewDocument,
    SearchAnswer,
    SearchCore,
    SearchQuery,
    check_served,
)
from braid.service.errors import FailedPrecondition, NotFound
from braid.service.limits import ServiceLimits
from braid.service.ray_serving import (
    BrokerFactory,
    RayShards,
    RemoteShard,
    ServeCall,
    ShardGeneration,
    keep_polling,
    keep_replica_grpc_on_loopback,
    running_replicas,
    stage_key,
)

log = logging.getLogger(__name__)


class BrokerReplica:
    """One replica of a generation's broker deployment: every served pipeline over that generation's shards."""

    def __init__(
        self,
        specs: Sequence[PipelineSpec],
        dataset: Dataset,
        index_root: str,
        shard_apps: Sequence[str],
        limits: ServiceLimits,
        threads: int | None,
        timeout_s: float,
        rerank_batch: int,
        rerank_wait_ms: float,
    ) -> None:
        from ray import serve

        keep_replica_grpc_on_loopback()
        self._serve, self._shard_apps = serve, list(shard_apps)
        self.running = [1] * len(self._shard_apps)  # optimistic until the first poll
        self._seen = [False] * len(self._shard_apps)  # whether each shard has had a running replica yet
        handles = [serve.get_app_handle(name) for name in self._shard_apps]

        def open_shard(index: int, spec: Any, path: Path) -> RemoteShard:
            return RemoteShard(handles[index], stage_key(spec, path), index, timeout_s, lambda: self.running[index])

        self.core = SearchCore(
            dataset,
            specs,
            Path(index_root),
            limits,
            None,  # the API process checks keys; the broker answers only it
            threads,
            False,
            rerank_batch,
            rerank_wait_ms,
            len(self._shard_apps),
            open_shard,
        )
        keep_polling(self._poll, "braid-broker-watch")

    def _poll(self) -> None:
        # Running shard replicas, as the controller says: a shard without one fails at once. A shard not yet seen
        # running counts as up: the broker starts beside its generation's shards, and the API sends it nothing
        # until all of them are up, so the first requests must not fail on a count polled while they started.
        counts = running_replicas(self._serve, self._shard_apps)
        self._seen = [seen or count > 0 for seen, count in zip(self._seen, counts, strict=True)]
        self.running = [count if seen else 1 for seen, count in zip(self._seen, counts, strict=True)]

    async def _run(self, work: Any, timeout_s: float) -> Any:
        return await self.core.call(work, time.monotonic() + timeout_s)

    async def search(self, query: SearchQuery, timeout_s: float) -> SearchAnswer:
        return await self._run(lambda deadline: self.core.search(query, deadline), timeout_s)

    async def batch_search(self, queries: Sequence[SearchQuery], timeout_s: float) -> list[SearchAnswer]:
        return await self._run(lambda deadline: self.core.batch_search(queries, deadline), timeout_s)

    async def rerank(
        self, query: str, documents: Sequence[NewDocument], pipeline: str, timeout_s: float
    ) -> SearchAnswer:
        return await self._run(lambda deadline: self.core.rerank(query, documents, pipeline, deadline), timeout_s)

    async def list_pipelines(self, timeout_s: float) -> list[dict[str, Any]]:
        return await self._run(lambda _: self.core.list_pipelines(), timeout_s)

    # Writes change the shards' indexes on disk, all shards or none (braid.indexer.update_transaction); the shard
    # replicas serve what they opened until the API process deploys the next generation over the changed indexes.

    async def add_documents(self, pipeline: str, documents: Sequence[NewDocument], timeout_s: float) -> Any:
        return await self._run(
            lambda deadline: self.core.add_documents(pipeline, documents, deadline, reload=False), timeout_s
        )

    async def delete_documents(self, pipeline: str, ids: Sequence[str], timeout_s: float) -> Any:
        return await self._run(
            lambda deadline: self.core.delete_documents(pipeline, ids, deadline, reload=False), timeout_s
        )

    def pid(self) -> int:
        return os.getpid()


def broker_factory(
    specs: Sequence[PipelineSpec],
    dataset: Dataset,
    index_root: Path,
    limits: ServiceLimits,
    shards: RayShards,
    rerank_batch: int = 8,
    rerank_wait_ms: float = 5.0,
) -> BrokerFactory:
    """What :meth:`RayShards.deploy` deploys as each generation's broker: R replicas of :class:`BrokerReplica`."""
    from ray import serve

    deployment = serve.deployment(
        BrokerReplica,
        name="broker",
        num_replicas=shards.replicas,
        ray_actor_options={"num_cpus": shards.replica_cpus},
        max_ongoing_requests=max(64, limits.max_concurrency),
        health_check_period_s=2,
        health_check_timeout_s=30,
        graceful_shutdown_timeout_s=5,
    )

    def build(generation: ShardGeneration) -> Any:
        shard_apps = [generation.app_name(index) for index in range(shards.count)]
        return deployment.bind(
            specs,
            dataset,
            str(index_root),
            shard_apps,
            limits,
            shards.threads,
            shards.timeout_s,
            rerank_batch,
            rerank_wait_ms,
        )

    return build


class BrokerCore(CoreBase):
    """The API process's core under ``braid serve --ray``: every operation goes to the broker deployment.

    Each request leases the generation current when it starts and keeps it to the end, so a reload never switches
    shards under a running request; the old generation is deleted when its last lease is returned.
    """

    def __init__(
        self,
        shards: RayShards,
        specs: Sequence[PipelineSpec],
        limits: ServiceLimits | None = None,
        auth: AuthConfig | None = None,
    ) -> None:
        check_served(specs)
        super().__init__(limits, auth)
        self.shards = shards
        self._names = [spec.name for spec in specs]
        self._retrievers = sorted({retriever.name for spec in specs for retriever in spec.retrievers})
        self._generation = shards.current
        self._leases: dict[int, int] = {}
        self._idle = threading.Condition()
        self._reload_lock = threading.Lock()
        for name in self._names:
            self.metrics.generation.labels(name).set(self._generation.number)

    @property
    def pipeline_names(self) -> list[str]:
        return list(self._names)

    def retriever_names(self) -> list[str]:
        return list(self._retrievers)

    @contextmanager
    def _lease(self) -> Iterator[ShardGeneration]:
        with self._idle:
            generation = self._generation
            self._leases[generation.number] = self._leases.get(generation.number, 0) + 1
        try:
            yield generation
        finally:
            with self._idle:
                self._leases[generation.number] -= 1
                self._idle.notify_all()

    def _forward(self, method: str, *args: Any, deadline: float | None = None) -> Any:
        with self._lease() as generation:
            return self._call(generation, method, *args, deadline=deadline)

    def _call(self, generation: ShardGeneration, method: str, *args: Any, deadline: float | None = None) -> Any:
        """``method(*args, timeout_s)`` on a replica of ``generation``'s broker, by ``deadline`` at the latest."""
        deadline = deadline if deadline is not None else time.monotonic() + self.limits.default_timeout_s
        call = ServeCall(generation.broker, "the broker", self.shards.timeout_s, lambda: generation.broker_running)
        return call(method, *args, max(0.0, deadline - time.monotonic()), deadline=deadline)

    def search(self, query: SearchQuery, deadline: float | None = None) -> SearchAnswer:
        answer = self._forward("search", query, deadline=deadline)
        self.metrics.observe_stages(answer.pipeline, answer.timings_ms)
        return answer

    def batch_search(self, queries: Sequence[SearchQuery], deadline: float | None = None) -> list[SearchAnswer]:
        return self._forward("batch_search", list(queries), deadline=deadline)

    def rerank(
        self, query: str, documents: Sequence[NewDocument], pipeline: str = "", deadline: float | None = None
    ) -> SearchAnswer:
        return self._forward("rerank", query, list(documents), pipeline, deadline=deadline)

    def list_pipelines(self) -> list[dict[str, Any]]:
        with self._lease() as generation:
            infos = self._call(generation, "list_pipelines")
        # A pipeline's generation is its deployment generation: each broker replica opens its pipelines once.
        return [{**info, "generation": generation.number} for info in infos]

    def add_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None
    ) -> tuple[int, int]:
        """Add documents to every shard's indexes (each to its home shard, all shards or none), then serve them from
        a new generation, as a reload does: (doc count, generation)."""
        return self._write("add_documents", pipeline, list(documents), deadline)

    def upsert_documents(
        self, pipeline: str, documents: Sequence[NewDocument], deadline: float | None = None
    ) -> tuple[int, int]:
        raise FailedPrecondition(
            "sharded serving on Ray takes AddDocuments and DeleteDocuments (multivector shards); upserts need the "
            "live collection of braid serve without --ray"
        )

    def delete_documents(self, pipeline: str, ids: Sequence[str], deadline: float | None = None) -> tuple[int, int]:
        return self._write("delete_documents", pipeline, list(ids), deadline)

    def _write(self, method: str, pipeline: str, items: list, deadline: float | None) -> tuple[int, int]:
        with self._reload_lock:  # one write or reload at a time: each generation opens one committed state
            # A write rewrites whole shard generations and may outlast a search's timeout: the request's own
            # deadline bounds the wait for the broker (a client that needs longer says so).
            count, _ = self._forward(method, pipeline, items, deadline=deadline)
            try:
                return count, self._switch()
            except BraidError as error:
                raise FailedPrecondition(
                    f"the change is written (the pipeline now holds {count} documents) but not yet served: {error}; "
                    "Reload serves it"
                ) from None

    def reload(self, pipeline: str = "") -> list[dict[str, Any]]:
        """Deploy a new generation of every shard and the broker (the indexes as they are on disk now) and switch
        to it; every pipeline reloads, whichever was named, since the shard deployments serve them all."""
        if pipeline and pipeline not in self._names:
            raise NotFound(f"unknown pipeline {pipeline!r} (served here: {', '.join(self._names)})")
        with self._reload_lock:
            self._switch()
        infos = self.list_pipelines()
        return [info for info in infos if info["name"] == pipeline] if pipeline else infos

    def _switch(self) -> int:
        """Deploy the next generation and switch the API to it in one step (the caller holds the reload lock); the
        old generation retires once its requests are answered. Returns the new generation's number."""
        new = self.shards.redeploy()  # all of the new generation is up, or it is deleted and this raises
        with self._idle:
            old, self._generation = self._generation, new
        for name in self._names:
            self.metrics.generation.labels(name).set(new.number)
        log.info("generation %d serves; generation %d retires when idle", new.number, old.number)
        threading.Thread(target=self._retire_when_idle, args=(old,), name="braid-retire", daemon=True).start()
        return new.number

    def _retire_when_idle(self, old: ShardGeneration) -> None:
        # Requests that leased the old generation are still answered by it: wait for them (at most a request's
        # deadline, after which none can be running) before deleting its deployments.
        with self._idle:
            self._idle.wait_for(lambda: self._leases.get(old.number, 0) == 0, self.limits.default_timeout_s)
        try:
            self.shards.retire(old.number)
        except Exception as error:  # the new generation serves; a leftover old one costs memory, not answers
            log.warning("could not delete generation %d (%s: %s)", old.number, type(error).__name__, error)
