"""Entry point of the ``braid`` console command.

User errors (:class:`BraidError`: bad input, missing data or index) print one line and exit with code 2, as
argparse does for bad arguments; a traceback means a bug in braid.
"""

from __future__ import annotations

import argparse
import sys

from braid.common.errors import BraidError
from braid.service.cli import collection_cmd, eval_cmd, index_cmd, query_cmd, search_cmd, serve_cmd, train_cmd, tune_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="braid", description="braid: hybrid retrieval and ranking")
    commands = "{collection,index,search,eval,tune,train,serve,query}"
    subparsers = parser.add_subparsers(dest="command", required=True, metavar=commands)
    collection_cmd.register(subparsers)
    index_cmd.register(subparsers)
    search_cmd.register(subparsers)
    eval_cmd.register(subparsers)
    tune_cmd.register(subparsers)
    train_cmd.register(subparsers)
    serve_cmd.register(subparsers)
    query_cmd.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BraidError as error:
        print(f"braid: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("braid: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
