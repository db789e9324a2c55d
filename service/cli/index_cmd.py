"""``braid index build`` and ``braid index info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eval.beir_format import read_corpus
from eval.dataset_resolver import resolve_dataset
from eval.errors import BraidError
from indexer.builders import INDEX_KINDS
from indexer.index_store import build_index
from indexer.manifest import Manifest
from indexer.multivector_index import add_documents, delete_documents
from service.cli.common import add_data_args, parse_params


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="build and inspect indexes")
    actions = index.add_subparsers(dest="index_command", required=True, metavar="{build,info,add,delete}")

    build = actions.add_parser("build", help="build an index over a dataset's corpus")
    build.add_argument("--dataset", required=True, help="dataset path or name")
    build.add_argument("--kind", default="bm25", choices=sorted(INDEX_KINDS), help="index kind (default: bm25)")
    build.add_argument("--param", action="append", metavar="KEY=VALUE", help="index build parameter (repeatable)")
    build.add_argument("--output", help="index folder (default: INDEX_DIR/<dataset>/<kind>-<digest>)")
    build.add_argument("--force", action="store_true", help="rebuild even if a matching index exists")
    build.add_argument("--pool-factor", type=int, help="multivector: token pooling factor, 1..4 (same as --param)")
    add_data_args(build)
    build.set_defaults(handler=run_build)

    info = actions.add_parser("info", help="print an index's manifest")
    info.add_argument("index", help="index folder")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(handler=run_info)

    add = actions.add_parser("add", help="add documents to a multivector index without a rebuild")
    add.add_argument("index", help="index folder")
    add.add_argument("--corpus", required=True, help="JSONL file of documents ({_id, title, text}), BEIR layout")
    add.set_defaults(handler=run_add)

    delete = actions.add_parser("delete", help="delete documents from a multivector index by id")
    delete.add_argument("index", help="index folder")
    delete.add_argument("ids", nargs="+", help="document ids")
    delete.set_defaults(handler=run_delete)


def run_build(args: argparse.Namespace) -> int:
    params = parse_params(args.param)
    if args.pool_factor is not None:
        if args.kind != "multivector":
            raise BraidError(f"--pool-factor applies to --kind multivector, not {args.kind}")
        params["pool_factor"] = args.pool_factor
    dataset = resolve_dataset(args.dataset, args.data_dir)
    path, manifest, built = build_index(
        dataset,
        args.kind,
        params,
        index_root=None if args.output else Path(args.index_dir),
        output=Path(args.output) if args.output else None,
        threads=args.threads,
        force=args.force,
    )
    state = "built" if built else "up to date"
    print(
        f"{manifest.kind} index {state}: {path} ({manifest.doc_count} documents, {manifest.index_bytes / 1e6:.1f} MB)"
    )
    return 0


def run_add(args: argparse.Namespace) -> int:
    path = Path(args.corpus)
    if not path.is_file():
        raise BraidError(f"corpus file {path} does not exist")
    documents = [(doc.doc_id, doc.contents) for doc in read_corpus(path)]
    count = add_documents(Path(args.index), documents)
    print(f"added {len(documents)} document(s): {args.index} now holds {count}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    count = delete_documents(Path(args.index), args.ids)
    print(f"deleted {len(set(args.ids))} document(s): {args.index} now holds {count}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    manifest = Manifest.read(Path(args.index))
    if args.json:
        print(json.dumps(manifest.__dict__, indent=2, sort_keys=True))
        return 0
    rows = [
        ("kind", manifest.kind),
        ("dataset", manifest.dataset),
        ("documents", str(manifest.doc_count)),
        ("parameters", json.dumps(manifest.params, sort_keys=True)),
        ("corpus sha256", manifest.corpus_checksum),
        ("files", f"{len(manifest.files)} ({manifest.index_bytes / 1e6:.2f} MB)"),
        (
            "build",
            f"{manifest.build_seconds:.1f}s, {manifest.docs_per_second:.1f} docs/s" if manifest.build_seconds else "-",
        ),
        ("braid version", f"{manifest.braid_version} (index format {manifest.format_version})"),
        ("created", manifest.created_at),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0
