"""``braid index build`` and ``braid index info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eval.dataset_resolver import resolve_dataset
from indexer.builders import INDEX_KINDS
from indexer.index_store import build_index
from indexer.manifest import Manifest
from service.cli.common import add_data_args, parse_params


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="build and inspect indexes")
    actions = index.add_subparsers(dest="index_command", required=True, metavar="{build,info}")

    build = actions.add_parser("build", help="build an index over a dataset's corpus")
    build.add_argument("--dataset", required=True, help="dataset path or name")
    build.add_argument("--kind", default="bm25", choices=sorted(INDEX_KINDS), help="index kind (default: bm25)")
    build.add_argument("--param", action="append", metavar="KEY=VALUE", help="index build parameter (repeatable)")
    build.add_argument("--output", help="index folder (default: INDEX_DIR/<dataset>/<kind>-<digest>)")
    build.add_argument("--force", action="store_true", help="rebuild even if a matching index exists")
    add_data_args(build)
    build.set_defaults(handler=run_build)

    info = actions.add_parser("info", help="print an index's manifest")
    info.add_argument("index", help="index folder")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(handler=run_info)


def run_build(args: argparse.Namespace) -> int:
    dataset = resolve_dataset(args.dataset, args.data_dir)
    path, manifest, built = build_index(
        dataset,
        args.kind,
        parse_params(args.param),
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
