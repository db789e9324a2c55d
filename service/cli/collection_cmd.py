"""``braid collection``: a named collection from a user's own documents, with every index its pipelines need."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from braid.common.collection_info import PassageSettings, read_collection_info
from braid.common.collection_writer import stage_collection
from braid.common.dataset_resolver import collections_dir, open_dataset_dir, resolve_dataset
from braid.common.document_source import FORMATS, read_documents
from braid.common.errors import BraidError
from braid.common.metadata_schema import FIELD_TYPES, parse_fields
from braid.pipelines.live_collection import LiveCollection, state_dir
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.service.cli.common import add_data_args

#: Short notes on retrieval that ship with braid (package data): a collection to try every command on (``--sample``).
SAMPLE = Path(str(resources.files("braid") / "samples" / "ir-notes.jsonl"))


def register(subparsers: argparse._SubParsersAction) -> None:
    collection = subparsers.add_parser(
        "collection", help="collections of your own documents: create, list, info, upsert, delete, optimize"
    )
    actions = collection.add_subparsers(
        dest="collection_command", required=True, metavar="{create,list,info,upsert,delete,optimize}"
    )

    create = actions.add_parser(
        "create", help="build a named collection, and its pipelines' indexes, from JSONL, CSV/TSV or a folder of files"
    )
    create.add_argument("name", help="collection name (letters, digits, '.', '_', '-')")
    source = create.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", type=Path, help="a .jsonl, .csv or .tsv file, or a folder of files")
    source.add_argument(
        "--sample", action="store_true", help=f"the {SAMPLE.name} documents that ship with braid (to try it out)"
    )
    create.add_argument("--format", choices=FORMATS, help="format of --from (default: from its suffix, or folder)")
    create.add_argument(
        "--pipeline",
        action="append",
        help="pipeline whose indexes to build (repeatable; default: hybrid); others build on first use",
    )
    create.add_argument(
        "--passage-words", type=int, default=0, help="cut documents into passages of N words (default: 0, whole)"
    )
    create.add_argument(
        "--passage-overlap", type=int, default=None, help="words each passage shares with the next (default: N/4)"
    )
    create.add_argument(
        "--field",
        action="append",
        metavar="NAME:TYPE",
        help=f"a metadata field searches may filter on (repeatable; types: {', '.join(FIELD_TYPES)})",
    )
    create.add_argument("--force", action="store_true", help="replace a collection of the same name")
    add_collections_arg(create)
    add_data_args(create)
    create.set_defaults(handler=run_create)

    listing = actions.add_parser("list", help="the collections under the collections folder")
    add_collections_arg(listing)
    listing.add_argument("--json", action="store_true", help="print as JSON")
    listing.set_defaults(handler=run_list)

    info = actions.add_parser("info", help="one collection: its source, documents and passages")
    info.add_argument("name", help="collection name")
    add_collections_arg(info)
    info.add_argument("--json", action="store_true", help="print as JSON")
    info.set_defaults(handler=run_info)

    upsert = actions.add_parser(
        "upsert", help="add or replace documents (by id) in a collection, durably; searches see them at once"
    )
    upsert.add_argument("name", help="collection (or dataset) name or path")
    upsert.add_argument(
        "--from", dest="source", required=True, type=Path, help="a .jsonl, .csv or .tsv file, or a folder"
    )
    upsert.add_argument("--format", choices=FORMATS, help="format of --from (default: from its suffix, or folder)")
    add_data_args(upsert)
    upsert.set_defaults(handler=run_upsert)

    delete = actions.add_parser("delete", help="delete documents by id from a collection")
    delete.add_argument("name", help="collection (or dataset) name or path")
    delete.add_argument("ids", nargs="+", help="document ids")
    add_data_args(delete)
    delete.set_defaults(handler=run_delete)

    optimize = actions.add_parser(
        "optimize", help="fold every write into fresh indexes (Lucene's force-merge): rankings of a fresh build"
    )
    optimize.add_argument("name", help="collection (or dataset) name or path")
    optimize.add_argument("--pipeline", action="append", help="pipeline whose indexes to build (default: hybrid)")
    add_data_args(optimize)
    optimize.set_defaults(handler=run_optimize)


def add_collections_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--collections-dir", help="where collections live (default: $BRAID_COLLECTIONS_DIR, else ./collections)"
    )


def _passages(args: argparse.Namespace) -> PassageSettings | None:
    if args.passage_words < 0:
        raise BraidError(f"--passage-words must be 0 (whole documents) or more, got {args.passage_words}")
    if not args.passage_words:
        if args.passage_overlap is not None:
            raise BraidError("--passage-overlap needs --passage-words")
        return None
    overlap = args.passage_words // 4 if args.passage_overlap is None else args.passage_overlap
    return PassageSettings(args.passage_words, overlap)


def run_create(args: argparse.Namespace) -> int:
    passages = _passages(args)
    fields = parse_fields(args.field or [])
    specs = [load_pipeline(name) for name in (args.pipeline or ["hybrid"])]  # bad names fail before any work
    root = collections_dir(args.collections_dir)
    if (root / args.name).exists() and not args.force:
        raise BraidError(f"collection {args.name!r} already exists in {root}; pass --force to replace it")
    staged = stage_collection(args.name, SAMPLE if args.sample else args.source, root, args.format, passages, fields)
    try:
        dataset = open_dataset_dir(staged.path, args.name)
        built = []
        for spec in specs:
            pipeline = open_pipeline(spec, dataset, Path(args.index_dir), args.threads, build_missing=True)
            built.append((spec.name, pipeline.index_paths, pipeline.index_bytes()))
            pipeline.close()
        final = staged.publish(replace=args.force)
    except BaseException:
        staged.discard()
        raise
    # Writes logged against a collection of this name before are not this one's.
    shutil.rmtree(state_dir(dataset, Path(args.index_dir)), ignore_errors=True)
    info = staged.info
    cut = f", {info.units} passages of {passages.words} words" if passages else ""
    print(f"collection {info.name}: {info.documents} documents{cut} from {info.source} -> {final}")
    for name, paths, size in built:
        print(f"  pipeline {name}: {len(paths)} index(es), {size / 1e6:.1f} MB")
    print(f'search it: braid search --collection {info.name} --pipeline {specs[0].name} "your query"', file=sys.stderr)
    return 0


def _infos(root: Path) -> list:
    if not root.is_dir():
        return []
    found = [read_collection_info(path) for path in sorted(root.iterdir()) if path.is_dir()]
    return [info for info in found if info is not None]


def run_list(args: argparse.Namespace) -> int:
    root = collections_dir(args.collections_dir)
    infos = _infos(root)
    if args.json:
        print(json.dumps([info.to_json() for info in infos], indent=2))
        return 0
    if not infos:
        print(f"no collections in {root}; create one with: braid collection create NAME --from FILE_OR_FOLDER")
        return 0
    print(f"{'name':<24} {'documents':>10} {'passages':>10}  source")
    for info in infos:
        passages = str(info.units) if info.passages else "-"
        print(f"{info.name:<24} {info.documents:>10} {passages:>10}  {info.source}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    root = collections_dir(args.collections_dir)
    info = read_collection_info(root / args.name)
    if info is None:
        names = ", ".join(found.name for found in _infos(root)) or "none"
        raise BraidError(f"no collection {args.name!r} in {root} (collections: {names})")
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    rows = [
        ("name", info.name),
        ("source", f"{info.source} ({info.format})"),
        ("documents", str(info.documents)),
        (
            "passages",
            f"{info.units} of {info.passages.words} words, overlap {info.passages.overlap}" if info.passages else "-",
        ),
        ("fields", ", ".join(f"{name} ({kind})" for name, kind in info.fields.items()) or "-"),
        ("created", info.created_at),
    ]
    for name, value in rows:
        print(f"{name:<10} {value}")
    return 0


def _live(args: argparse.Namespace) -> LiveCollection:
    dataset = resolve_dataset(args.name, args.data_dir, download=False)
    return LiveCollection(dataset, Path(args.index_dir), args.threads)


def _write(args: argparse.Namespace, write: Callable[[LiveCollection], object]) -> tuple[int, int]:
    """Apply ``write`` to the collection as its writer: (live documents, the write's sequence number)."""
    live = _live(args)
    try:
        write(live)
        return live.documents, live.seq
    finally:
        live.close()


def run_upsert(args: argparse.Namespace) -> int:
    documents = list(read_documents(args.source, args.format))
    if not documents:
        raise BraidError(f"{args.source} holds no documents")
    count, seq = _write(args, lambda live: live.upsert(documents))
    print(f"upserted {len(documents)} document(s) into {args.name}: {count} documents (write {seq})")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    count, seq = _write(args, lambda live: live.delete(args.ids))
    print(f"deleted {len(set(args.ids))} document(s) from {args.name}: {count} documents (write {seq})")
    return 0


def run_optimize(args: argparse.Namespace) -> int:
    specs = [load_pipeline(name) for name in (args.pipeline or ["hybrid"])]
    live = _live(args)
    seq, writes = live.seq, len(live.log.records)

    def build(dataset) -> None:
        for spec in specs:
            opened = open_pipeline(spec, dataset, Path(args.index_dir), args.threads, follow_writes=False)
            opened.close()

    try:
        dataset = live.optimize(build)
    finally:
        live.close()
    count = sum(1 for _ in dataset.iter_corpus())
    print(f"optimized {args.name}: {writes} write(s) up to {seq} folded into fresh indexes of {count} documents")
    return 0
