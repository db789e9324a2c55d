"""Serving sharded indexes on Ray Serve: each serving shard a deployment with R replicas, a broker deployment in front.

``braid serve --ray local|ADDRESS --shards N --replicas R`` deploys one Ray Serve application per serving shard
(:mod:`braid.indexer.serving_shards`), each a :class:`ShardReplica` deployment of R replicas that opens, at start,
every retriever the served pipelines need over that shard's indexes, and, beside them, the broker deployment
(:mod:`braid.service.ray_broker`), whose replicas fan each query out to every shard through :class:`RemoteShard`
handles, merge the per-shard lists into one list per retriever, and fuse and rerank once, exactly as one process
does. The ``braid serve`` process terminates gRPC and HTTP and forwards to the broker; it holds no index.

Ray Serve gives the replicas health checks and restarts: a replica whose process dies is replaced by the
controller; with R >= 2 the handle routes around it (:class:`ServeCall` retries), with R = 1 the requests that need
it fail with UNAVAILABLE / 503 (:class:`ShardUnavailable`) until the replacement is up. ``local`` starts Ray on this
machine, bound to loopback, with Serve's own HTTP proxies disabled (braid's servers are the only listeners).

Reload is blue/green over generations (:class:`RayShards`): generation g + 1 of every shard and of the broker comes up
beside g's, the API switches to it at once, and g is deleted once no request uses it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.ray_cluster import connect_ray
from braid.indexer.index_store import find_index
from braid.indexer.kinds import settle_updates
from braid.indexer.serving_shards import check_shard, shard_roots
from braid.pipelines.pipeline import RetrieverSpec, ShardOpener
from braid.pipelines.spec import PipelineSpec
from braid.retriever.protocol import Partial
from braid.service.errors import FailedPrecondition, ShardUnavailable

log = logging.getLogger(__name__)

#: (retriever kind, index folder, search parameters as sorted items): one retriever a shard replica serves.
StageKey = tuple[str, str, tuple[tuple[str, Any], ...]]


def stage_key(spec: RetrieverSpec, path: Path) -> StageKey:
    return (spec.kind, str(Path(path).resolve()), tuple(sorted(spec.search_params().items())))


LOOPBACK = ("127.0.0.1", "::1")


def keep_replica_grpc_on_loopback() -> None:
    """On a node bound to loopback, make this replica's inter-deployment gRPC server listen there, not everywhere.

    Ray Serve starts a gRPC server in every replica, for calls between deployments, on ``[::]:0``: every interface,
    in plaintext, whatever address the node was started on. braid's local cluster (``braid serve --ray local``) binds
    everything else to 127.0.0.1, so that its two servers are the only listeners a network reaches. The replica looks
    the port helper up in ``ray.serve._private.replica`` when it starts that server, after the deployment's
    constructor has run: called from the constructor, this rebinds ``[::]`` to the node's address. A Ray without that
    helper is left as it is (``test_ray_serving`` lists every listening socket of the cluster and would fail).
    """
    import ray
    from ray.serve._private import replica

    node = ray.util.get_node_ip_address()
    original = getattr(replica, "add_port_to_grpc_server", None)
    if node not in LOOPBACK or original is None or getattr(original, "braid_loopback", False):
        return

    def add_port(server: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        return original(server, f"{node}:{port}" if host == "[::]" else address)

    add_port.braid_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_port


class ShardReplica:
    """One replica of one serving shard: the retrievers over its slice of every index, opened once at start."""

    def __init__(self, index: int, count: int, stages: Sequence[StageKey], threads: int | None = None) -> None:
        from braid.retriever.kinds import RETRIEVER_KINDS

        keep_replica_grpc_on_loopback()
        self.index, self.count = index, count
        self._retrievers = {
            key: RETRIEVER_KINDS[key[0]].open(Path(key[1]), dict(key[2]), threads) for key in map(_as_key, stages)
        }

    def query_statistics(self, key: StageKey, query: Any, k: int) -> Any:
        return self._retrievers[_as_key(key)].query_statistics(query, k)

    def encode_query(self, key: StageKey, query: str) -> Any:
        return self._retrievers[_as_key(key)].encode_query(query)

    def search_partial(self, key: StageKey, query: Any, k: int, statistics: Any = None) -> Partial:
        return self._retrievers[_as_key(key)].search_partial(query, k, statistics)

    def pid(self) -> int:
        return os.getpid()


def _as_key(key: Sequence) -> StageKey:
    # Keys cross Ray as lists after serialization by some paths; tuples all the way down make them hashable.
    kind, path, params = key
    return (kind, path, tuple((name, value) for name, value in params))


class ServeCall:
    """Calls to one Ray Serve application that survive its replicas dying.

    A call that reaches a replica as it dies (ActorDiedError and kin) is sent again: Ray Serve routes the retry to
    another replica, so with R >= 2 a killed replica costs no request. When the application has no running replica
    at all (R = 1, before Ray Serve has replaced it) new calls fail at once with UNAVAILABLE, and calls waiting on
    the dead replica fail as soon as the controller reports it, instead of at the deadline. An error the callee
    raised itself (a :class:`BraidError`: a bad argument, an unknown pipeline) is raised as it is, not retried.
    """

    RETRIES = 3
    POLL_S = 0.25

    def __init__(self, handle: Any, label: str, timeout_s: float, running: Callable[[], int] | None = None) -> None:
        self.handle, self.label, self.timeout_s = handle, label, timeout_s
        self._running = running or (lambda: 1)

    def __call__(self, method: str, *args: Any, deadline: float | None = None) -> Any:
        from ray.exceptions import RayError, RayTaskError

        deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
        for attempt in range(self.RETRIES + 1):
            if self._running() == 0:
                raise ShardUnavailable(f"{self.label} has no running replica; Ray Serve is restarting it, retry")
            response = getattr(self.handle, method).remote(*args)
            try:
                return self._wait(response, deadline)
            except RayTaskError as error:
                if isinstance(error.cause, BraidError):
                    raise error.cause from None
                raise
            except RayError as error:
                log.warning("%s, attempt %d: %s", self.label, attempt + 1, type(error).__name__)
                time.sleep(0.05 * (attempt + 1))  # the router learns of the dead replica within a few ms
        raise ShardUnavailable(f"{self.label} did not answer after {self.RETRIES + 1} attempts; retry")

    def _wait(self, response: Any, deadline: float) -> Any:
        """The call's result, waited for in short slices: a call whose replica died with no other to take over
        (the controller reports no running replica) fails then, not at the deadline."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                response.cancel()
                raise ShardUnavailable(f"{self.label} did not answer in time; retry")
            try:
                return response.result(timeout_s=min(self.POLL_S, remaining))
            except TimeoutError:
                if self._running() == 0:
                    response.cancel()
                    raise ShardUnavailable(
                        f"{self.label} lost its only running replica mid-request; Ray Serve is restarting it"
                    ) from None


class RemoteShard:
    """The :class:`~braid.retriever.sharded_retriever.Shard` of one retriever in one shard deployment, called
    through :class:`ServeCall` (retries on a dying replica, UNAVAILABLE at once while none runs)."""

    def __init__(
        self, handle: Any, key: StageKey, index: int, timeout_s: float, running: Callable[[], int] | None = None
    ) -> None:
        self.key, self.index = key, index
        self._call = ServeCall(handle, f"shard {index}", timeout_s, running)

    def document_text(self, doc_id: str) -> str | None:
        return None  # texts stay with the replicas' indexes; a reranking broker reads them from the collection

    def query_statistics(self, query: Any, k: int) -> Any:
        return self._call("query_statistics", self.key, query, k)

    def encode_query(self, query: str) -> Any:
        return self._call("encode_query", self.key, query)

    def search_partial(self, query: Any, k: int, statistics: Any = None) -> Partial:
        return self._call("search_partial", self.key, query, k, statistics)


@dataclass
class ShardGeneration:
    """One deployed generation of every shard (and of the broker over them): its Serve applications, handles and
    running replica counts."""

    number: int
    handles: list[Any]
    running: list[int]  # running replicas per shard, as the controller last said
    broker: Any = None  # the broker deployment's handle, when one is deployed (braid.service.ray_broker)
    broker_running: int = 0

    def app_name(self, index: int) -> str:
        return f"braid-g{self.number}-shard-{index}"

    @property
    def broker_app(self) -> str:
        return f"braid-g{self.number}-broker"

    @property
    def app_names(self) -> list[str]:
        return [self.app_name(index) for index in range(len(self.running))] + [self.broker_app]


#: Builds the broker application of a generation (bound to its shard applications): braid.service.ray_broker.
BrokerFactory = Callable[[ShardGeneration], Any]


def running_replicas(serve: Any, names: Sequence[str]) -> list[int]:
    """Running replicas of each named Serve application (0 for one that does not exist)."""
    applications = serve.status().applications
    counts = []
    for name in names:
        status = applications.get(name)
        deployments = status.deployments.values() if status is not None else ()
        counts.append(sum(d.replica_states.get("RUNNING", 0) for d in deployments))
    return counts


def keep_polling(action: Callable[[], None], name: str, stop: threading.Event | None = None) -> None:
    """Call ``action`` twice a second on a daemon thread until ``stop`` is set. A failing call (a controller hiccup)
    must not end the watch: it is logged, the last known counts stand, and the next call tries again."""
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.wait(0.5):
            try:
                action()
            except Exception as error:
                log.debug("%s: %s", name, error)

    threading.Thread(target=loop, name=name, daemon=True).start()


class RayShards:
    """The shard deployments of one ``braid serve --ray``: deploy, hand out shards, redeploy, shut down.

    Every deployment is a *generation* of all N shard applications and the broker over them. A reload deploys
    generation g + 1 beside g (each replica opens the indexes as they are on disk now) and returns only when all of
    it is up; if any part fails, the new generation's applications are deleted and g serves on. The API
    (:class:`~braid.service.ray_broker.BrokerCore`) then switches to g + 1 in one step and :meth:`retire` deletes g
    once no request uses it: all shards switch together or none does (a blue/green deployment).
    """

    def __init__(
        self,
        address: str,
        shards: int,
        replicas: int,
        threads: int | None = None,
        timeout_s: float = 30.0,
        replica_cpus: float = 0.0,
    ) -> None:
        if shards < 1 or replicas < 1:
            raise BraidError(f"--shards and --replicas must be >= 1, got {shards} and {replicas}")
        self.count, self.replicas, self.threads, self.timeout_s = shards, replicas, threads, timeout_s
        self.replica_cpus = replica_cpus
        self.ray = connect_ray(address)
        from ray import serve

        self.serve = serve
        serve.start(proxy_location="Disabled")
        # Made once, here, before any request: building a deployment's config registers and unregisters a module
        # with cloudpickle, process-wide and unlocked (ray.serve.config), and a reload that built one while
        # requests flowed failed with "not registered for pickle by value". Later generations copy it (.options).
        self._deployment = serve.deployment(
            ShardReplica,
            num_replicas=replicas,
            ray_actor_options={"num_cpus": replica_cpus},
            # Every query sends one call per retriever (and round) to each shard; Serve's default of 5 in flight
            # per replica would queue a few concurrent queries' calls in the router.
            max_ongoing_requests=64,
            health_check_period_s=2,
            health_check_timeout_s=30,
            graceful_shutdown_timeout_s=5,
        )
        self.generations: list[ShardGeneration] = []  # deployed and not yet retired, oldest first
        self._served: tuple[Sequence[PipelineSpec], Dataset, Path, BrokerFactory | None] | None = None
        self._lock = threading.Lock()  # one deployment at a time
        self._stop = threading.Event()
        self._watching = False

    @property
    def current(self) -> ShardGeneration:
        if not self.generations:
            raise BraidError("no shard generation is deployed yet")
        return self.generations[-1]

    @property
    def handles(self) -> list[Any]:
        return self.current.handles

    @property
    def running(self) -> list[int]:
        return self.current.running

    def _stages(self, specs: Sequence[PipelineSpec], dataset: Dataset, index_root: Path) -> list[list[StageKey]]:
        roots = shard_roots(index_root, self.count)
        stages: list[list[StageKey]] = [[] for _ in roots]
        for spec in specs:
            for stage in spec.retrievers:
                for index, root in enumerate(roots):
                    path = find_index(dataset, stage.kind_info.index.name, stage.index_params(), root, edited=True)
                    if path is None:
                        raise BraidError(
                            f"no {stage.kind_info.index.name} index for {dataset.name} in shard {index} of "
                            f"{self.count} under {index_root} (pipeline {spec.name!r}); build them with "
                            f"shards = {self.count} in a build config"
                        )
                    check_shard(path, index, self.count)
                    settle_updates(path)  # every replica of the new generation opens the committed state
                    if stage_key(stage, path) not in stages[index]:
                        stages[index].append(stage_key(stage, path))
        return stages

    def deploy(
        self, specs: Sequence[PipelineSpec], dataset: Dataset, index_root: Path, broker: BrokerFactory | None = None
    ) -> ShardOpener:
        """Deploy a new generation of every shard with the retrievers ``specs`` need, then (``broker``) the broker
        deployment over them; returns the generation's shard opener once all replicas are up. On any failure no
        application of the new generation is left and earlier generations keep serving."""
        with self._lock:
            stages = self._stages(specs, dataset, index_root)
            number = self.generations[-1].number + 1 if self.generations else 1
            generation = ShardGeneration(number, [], [self.replicas] * self.count)
            targets = [
                self.serve.RunTarget(
                    self._deployment.options(name=f"shard-{index}").bind(index, self.count, keys, self.threads),
                    name=generation.app_name(index),
                    route_prefix=None,
                )
                for index, keys in enumerate(stages)
            ]
            if broker is not None:
                # The broker's replicas only bind handles to the shard applications when they start (they call
                # them per query), so they come up beside the shards rather than after them.
                targets.append(self.serve.RunTarget(broker(generation), name=generation.broker_app, route_prefix=None))
            started = time.monotonic()
            try:
                # Every application deploys at once and the call returns when every replica is up.
                handles = self.serve.run_many(targets)
            except Exception as error:
                self._delete(generation)
                raise FailedPrecondition(
                    f"shard generation {number} failed to deploy ({type(error).__name__}: {error}); "
                    + (f"generation {number - 1} serves on" if number > 1 else "nothing is served")
                ) from None
            generation.handles = handles[: self.count]
            if broker is not None:
                generation.broker, generation.broker_running = handles[-1], self.replicas
            self.generations.append(generation)
            self._served = (specs, dataset, index_root, broker)
            log.info("generation %d is up in %.1f s", number, time.monotonic() - started)
        self._watch()

        def open_shard(index: int, spec: RetrieverSpec, path: Path) -> RemoteShard:
            return RemoteShard(
                generation.handles[index],
                stage_key(spec, path),
                index,
                self.timeout_s,
                lambda: generation.running[index],
            )

        return open_shard

    @property
    def generation(self) -> int:
        """The number of the newest deployed generation."""
        return self.current.number

    def redeploy(self) -> ShardGeneration:
        """A new generation of every shard (and broker) over what :meth:`deploy` last served, the indexes as they are
        on disk now; returns it once all of it is up (on failure none of it is left, and this raises)."""
        if self._served is None:
            raise BraidError("nothing was deployed yet")
        self.deploy(*self._served)
        return self.current

    def retire(self, number: int) -> None:
        """Delete generation ``number``'s applications (once no request uses them, or to discard it)."""
        with self._lock:
            retired = [generation for generation in self.generations if generation.number == number]
            self.generations = [generation for generation in self.generations if generation.number != number]
        for generation in retired:
            self._delete(generation)

    def _delete(self, generation: ShardGeneration, wait_s: float = 60.0) -> None:
        """Delete the generation's applications, all at once, and wait (at most ``wait_s``) until they are gone."""
        names = set(generation.app_names) & set(self.serve.status().applications)
        for name in names:
            self.serve.delete(name, _blocking=False)
        until = time.monotonic() + wait_s
        while names & set(self.serve.status().applications) and time.monotonic() < until:
            time.sleep(0.2)

    def _watch(self) -> None:
        """Poll the Serve controller for running replicas (twice a second) so calls to a shard without one fail
        fast."""
        if self._watching:
            return
        self._watching = True

        def poll() -> None:
            for generation in list(self.generations):
                *generation.running, generation.broker_running = running_replicas(self.serve, generation.app_names)

        keep_polling(poll, "braid-shard-watch", self._stop)

    def replica_pids(self) -> dict[int, list[int]]:
        """Each shard's replica process ids in the current generation (what a fault test kills), by asking the
        replicas themselves."""
        generation = self.current
        counts = running_replicas(self.serve, generation.app_names)
        return {index: self._pids(generation.handles[index], counts[index]) for index in range(self.count)}

    def broker_pids(self) -> list[int]:
        """The current generation's broker replica process ids (none without a broker deployment)."""
        generation = self.current
        if generation.broker is None:
            return []
        return self._pids(generation.broker, running_replicas(self.serve, [generation.broker_app])[0])

    def _pids(self, handle: Any, running: int) -> list[int]:
        seen: set[int] = set()
        for _ in range(20 * max(running, 1)):
            seen.add(handle.pid.remote().result(timeout_s=self.timeout_s))
            if len(seen) >= running:
                break
        return sorted(seen)

    def close(self) -> None:
        self._stop.set()
        try:
            self.serve.shutdown()
        finally:
            self.ray.shutdown()
