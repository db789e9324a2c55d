"""``braid serve``: the gRPC and HTTP servers over one core."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.common.ray_cluster import ray_cli_hint
from braid.pipelines.pipeline import load_pipeline
from braid.service.cli.common import add_data_args, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="serve pipelines over gRPC and HTTP")
    serve.add_argument(
        "--dataset", "--collection", dest="dataset", required=True, help="collection or dataset (name or path) to serve"
    )
    serve.add_argument(
        "--pipelines",
        nargs="+",
        default=["bm25"],
        metavar="PIPELINE",
        help="built-in names or TOML files; the first is the default (default: bm25)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback)")
    serve.add_argument("--grpc-port", type=int, default=50051, help="gRPC port; 0 picks a free one (default: 50051)")
    serve.add_argument("--http-port", type=int, default=8080, help="HTTP port; 0 picks a free one (default: 8080)")
    serve.add_argument("--no-console", action="store_true", help="leave out the web console served at / over HTTP")
    serve.add_argument(
        "--api-key-file",
        type=Path,
        help="file with the API key for writes (Add/Delete/Reload); else $BRAID_API_KEY; without one, writes are off",
    )
    serve.add_argument("--auth-reads", action="store_true", help="require the API key for searches too")
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: serve gRPC and HTTPS with TLS")
    serve.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    serve.add_argument("--max-concurrency", type=positive_int, default=64, help="admitted requests before 429 (64)")
    serve.add_argument("--workers", type=positive_int, default=8, help="worker threads running requests (8)")
    serve.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask for (1000)")
    serve.add_argument("--timeout", type=float, default=30.0, help="deadline of requests that set none, seconds (30)")
    serve.add_argument("--rerank-batch", type=positive_int, default=8, help="requests per reranker call, at most (8)")
    serve.add_argument("--rerank-wait-ms", type=float, default=5.0, help="how long a reranker batch fills (5 ms)")
    serve.add_argument("--grace", type=float, default=30.0, help="seconds in-flight requests get at shutdown (30)")
    serve.add_argument("--build-missing", action="store_true", help="build missing indexes at start (else: an error)")
    serve.add_argument("--ready-file", type=Path, help="write the bound addresses here as JSON once serving")
    serve.add_argument(
        "--shards",
        type=positive_int,
        default=1,
        help="serve the N serving shards a build job wrote (shards = N in its config), merged per query (default: 1)",
    )
    serve.add_argument(
        "--ray",
        metavar="local|ADDRESS",
        help="serve the shards as Ray Serve deployments on this Ray cluster ('local': start one on loopback); "
        "without it, shards are searched in this process",
    )
    serve.add_argument("--replicas", type=positive_int, default=1, help="Ray Serve replicas per shard (default: 1)")
    serve.add_argument(
        "--replica-cpus",
        type=float,
        default=0.0,
        help="CPUs Ray reserves per shard replica (default: 0, pack replicas on any node; set 1+ to spread them)",
    )
    serve.add_argument(
        "--result-cache",
        type=int,
        default=4096,
        metavar="N",
        help="answers kept per pipeline for repeated searches, dropped by any write (default: 4096; 0: off)",
    )
    serve.add_argument(
        "--query-cache-mb",
        type=int,
        default=64,
        metavar="MB",
        help="query encodings kept for repeated queries (default: 64; 0: off)",
    )
    add_data_args(serve)
    serve.set_defaults(handler=run)


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is not None:
        try:
            key = args.api_key_file.read_text().strip()
        except OSError as error:
            raise BraidError(f"cannot read --api-key-file: {error}") from None
    else:
        key = os.environ.get("BRAID_API_KEY", "").strip()
    if key and len(key) < 16:
        raise BraidError("the API key must be at least 16 characters")
    return key or None


def run(args: argparse.Namespace) -> int:
    from braid.service.core import AuthConfig, CoreBase, SearchCore  # the server stack loads only for this command
    from braid.service.limits import ServiceLimits
    from braid.service.server import BraidServer, ServerConfig

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(
        args.host, args.grpc_port, args.http_port, args.tls_cert, args.tls_key, args.grace, not args.no_console
    )
    if args.timeout <= 0 or args.rerank_wait_ms < 0 or args.grace < 0:
        raise BraidError("--timeout must be > 0, --rerank-wait-ms and --grace >= 0")
    if args.result_cache < 0 or args.query_cache_mb < 0:
        raise BraidError("--result-cache and --query-cache-mb must be >= 0 (0 turns the cache off)")
    from braid.indexer.query_encodings import set_query_cache_bytes

    set_query_cache_bytes(args.query_cache_mb << 20)
    limits = ServiceLimits(
        max_k=args.max_k, max_concurrency=args.max_concurrency, workers=args.workers, default_timeout_s=args.timeout
    )
    if args.replica_cpus < 0:
        raise BraidError(f"--replica-cpus must be >= 0, got {args.replica_cpus}")
    if args.ray is None and args.replicas > 1:
        raise BraidError("--replicas needs --ray local|ADDRESS (replicas are Ray Serve's)")
    if args.ray is not None and args.shards < 2:
        raise BraidError("--ray serves serving shards: give --shards N >= 2 (indexes built with shards = N)")
    auth = AuthConfig(_api_key(args), args.auth_reads)
    specs = [load_pipeline(name) for name in args.pipelines]
    dataset = resolve_dataset(args.dataset, args.data_dir)
    shards = None
    if args.ray is not None:
        from braid.service.ray_serving import RayShards

        shards = RayShards(args.ray, args.shards, args.replicas, args.threads, args.timeout, args.replica_cpus)
    try:
        core: CoreBase
        if shards is not None:
            from braid.service.ray_broker import BrokerCore, broker_factory

            # The shard deployments and the broker deployment over them; this process keeps the API only.
            index_root = Path(args.index_dir)
            factory = broker_factory(specs, dataset, index_root, limits, shards, args.rerank_batch, args.rerank_wait_ms)
            shards.deploy(specs, dataset, index_root, factory)
            core = BrokerCore(shards, specs, limits, auth)
        else:
            core = SearchCore(
                dataset,
                specs,
                Path(args.index_dir),
                limits,
                auth,
                args.threads,
                args.build_missing,
                args.rerank_batch,
                args.rerank_wait_ms,
                args.shards,
                result_cache_entries=args.result_cache,
            )
        server = BraidServer(core, config)
        # Asked before the event loop starts: Ray Serve's blocking handle calls are refused inside one.
        replicas = shards.replica_pids() if shards is not None else None
        brokers = shards.broker_pids() if shards is not None else None
        ray_cli = ray_cli_hint(shards.ray) if shards is not None else None

        def ready(started: BraidServer) -> None:
            addresses = {**started.addresses, "pipelines": core.pipeline_names, "pid": os.getpid()}
            if replicas is not None:
                addresses["shard_replicas"] = replicas
                addresses["broker_replicas"] = brokers
                addresses["ray"] = ray_cli
            line = json.dumps(addresses)
            if args.ready_file is not None:
                atomic_write_text(args.ready_file, line + "\n")
            print(f"braid serve: ready {line}", file=sys.stderr, flush=True)

        drained = asyncio.run(server.serve_until_signal(ready))
    finally:
        if shards is not None:
            shards.close()
    print(f"braid serve: stopped ({'drained' if drained else 'grace period over'})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    # The Lucene JVM (pyjnius) can crash the interpreter's own teardown (SIGSEGV seen on exit here); everything
    # is closed and flushed by now, so leave without it.
    os._exit(0)
