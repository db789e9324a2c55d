"""``braid query``: ask a running braid server (gRPC)."""

from __future__ import annotations

import argparse
import json
import os

import grpc

from braid.common.errors import BraidError
from braid.service.cli.common import parse_params, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    query = subparsers.add_parser("query", help="search through a running braid server (gRPC)")
    query.add_argument("query", nargs="?", help="query text (omit with --list)")
    query.add_argument("--server", default="127.0.0.1:50051", help="gRPC address (default: 127.0.0.1:50051)")
    query.add_argument("--pipeline", default="", help="pipeline name (default: the server's default)")
    query.add_argument("-k", type=positive_int, default=10, help="number of hits (default: 10)")
    query.add_argument("--weight", action="append", metavar="NAME=W", help="fusion weight for this query")
    query.add_argument("--rerank-depth", type=int, help="rerank depth for this query (0 skips reranking)")
    query.add_argument("--explain", action="store_true", help="show each retriever's rank and score")
    query.add_argument("--json", action="store_true", help="print the response as JSON")
    query.add_argument("--list", action="store_true", help="list the server's pipelines instead")
    query.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds (default: 30)")
    query.add_argument("--tls-ca", help="PEM CA certificate: connect with TLS")
    query.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToDict

    from braid.service.client import BraidClient

    if not args.list and not args.query:
        raise BraidError("give query text, or --list")
    weights = {name: float(value) for name, value in parse_params(args.weight).items()} if args.weight else None
    with BraidClient(args.server, os.environ.get("BRAID_API_KEY"), args.tls_ca, args.timeout) as client:
        try:
            if args.list:
                response = client.list_pipelines()
                if args.json:
                    print(json.dumps(MessageToDict(response)))
                for info in response.pipelines:
                    if not args.json:
                        fusion = f" fused by {info.fusion}" if info.fusion else ""
                        print(f"{info.name:<16} {info.doc_count:>9} docs  {', '.join(info.retrievers)}{fusion}")
                return 0
            response = client.search(args.query, args.k, args.pipeline, weights, args.rerank_depth, args.explain)
        except grpc.RpcError as error:
            raise BraidError(f"{args.server}: {error.code().name}: {error.details()}") from None
        except ValueError as error:
            raise BraidError(str(error)) from None
    if args.json:
        print(json.dumps(MessageToDict(response, preserving_proto_field_name=True)))
        return 0
    for hit in response.hits:
        print(f"{hit.rank:>3}  {hit.score:9.4f}  {hit.doc_id}")
        if args.explain:
            parts = [
                f"{name} #{r.rank} ({r.score:.4f})" if r.HasField("rank") else f"{name} -"
                for name, r in hit.explanation.retrievers.items()
            ]
            parts += [f"{stage} {score:.4f}" for stage, score in hit.explanation.stages.items()]
            print(f"{'':>5}{'; '.join(parts)}")
    total = response.timings_ms.get("total")
    if total is not None:
        print(f"({response.pipeline}, {total:.1f} ms on the server)")
    return 0
