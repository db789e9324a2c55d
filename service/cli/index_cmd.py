"""``braid index build`` and ``braid index info``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from braid.common.beir_format import read_corpus
from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index
from braid.indexer.kinds import INDEX_KINDS, add_documents, delete_documents, updatable_kinds
from braid.indexer.manifest import Manifest
from braid.indexer.opened_memory import opened_memory
from braid.service.cli.common import add_data_args, parse_params, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    index = subparsers.add_parser("index", help="build and inspect indexes")
    actions = index.add_subparsers(
        dest="index_command", required=True, metavar="{build,info,verify,add,delete,optimize}"
    )

    build = actions.add_parser("build", help="build an index over a dataset's corpus, or run a build job (--config)")
    build.add_argument("--dataset", "--collection", dest="dataset", help="collection or dataset, by name or path")
    build.add_argument("--config", type=Path, help="build.toml: a sharded, resumable job building several indexes")
    build.add_argument(
        "--ray", metavar="ADDRESS", help="with --config: encode shards as Ray tasks ('local' or a cluster)"
    )
    build.add_argument("--ray-workers", type=positive_int, default=2, help="with --ray local: worker CPUs (default: 2)")
    build.add_argument("--ray-gpus-per-task", type=float, default=0.0, help="with --ray: GPUs per shard task (0)")
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

    verify = actions.add_parser("verify", help="re-check an index (or a folder of indexes) against its manifest")
    verify.add_argument("index", nargs="+", help="index folder, or a folder of indexes (a build job's output)")
    verify.set_defaults(handler=run_verify)

    updatable = ", ".join(updatable_kinds())
    add = actions.add_parser("add", help=f"add documents to an index without a rebuild ({updatable} indexes)")
    add.add_argument("index", help="index folder")
    add.add_argument("--corpus", required=True, help="JSONL file of documents ({_id, title, text}), BEIR layout")
    add.set_defaults(handler=run_add)

    delete = actions.add_parser("delete", help=f"delete documents by id ({updatable} indexes)")
    delete.add_argument("index", help="index folder")
    delete.add_argument("ids", nargs="+", help="document ids")
    delete.set_defaults(handler=run_delete)

    optimize = actions.add_parser(
        "optimize",
        help="fold a collection's writes into fresh indexes (Lucene's force-merge): braid collection optimize",
    )
    optimize.add_argument("name", metavar="COLLECTION", help="collection (or dataset) name or path")
    optimize.add_argument("--pipeline", action="append", help="pipeline whose indexes to build (default: hybrid)")
    add_data_args(optimize)
    optimize.set_defaults(handler=run_optimize)


def run_optimize(args: argparse.Namespace) -> int:
    from braid.service.cli.collection_cmd import run_optimize as optimize_collection

    return optimize_collection(args)


def run_build(args: argparse.Namespace) -> int:
    if args.config is not None:
        return run_job(args)
    if args.ray:
        raise BraidError("--ray applies to build jobs: give --config build.toml")
    if not args.dataset:
        raise BraidError("give --dataset (one index) or --config build.toml (a build job)")
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


def run_job(args: argparse.Namespace) -> int:
    from braid.indexer.build_config import load_build_config
    from braid.indexer.build_job import BuildJob

    if args.dataset or args.param or args.pool_factor is not None or args.kind != "bm25":
        raise BraidError(
            "with --config, the collection and index kinds come from the config file, not the command line"
        )
    config = load_build_config(args.config)
    if args.output:
        config = replace(config, output=Path(args.output))
    dataset = resolve_dataset(config.dataset, args.data_dir or config.data_dir)
    runner = None
    if args.ray:
        from braid.indexer.ray_runner import RayRunner

        runner = RayRunner(args.ray, args.ray_workers, args.ray_gpus_per_task)
    try:
        job = BuildJob(config, dataset, args.threads, args.force, runner)
        reports = job.run()
    finally:
        if runner is not None:
            runner.close()
    # docs/s: encoding alone, per worker; build docs/s: encoding and assembly (where Lucene indexes) together.
    header = (
        "kind",
        "status",
        "shards",
        "reused",
        "docs",
        "encode s",
        "docs/s",
        "assemble s",
        "build docs/s",
        "wall s",
        "peak GB",
    )
    print(f"{header[0]:<12} {header[1]:<10} " + " ".join(f"{h:>12}" for h in header[2:]))
    for r in reports:
        rate = f"{r.docs_per_second:.1f}" if r.docs_per_second else "-"
        build_rate = f"{r.build_docs_per_second:.1f}" if r.build_docs_per_second else "-"
        cells = (r.shards, r.shards_reused, r.documents, f"{r.encode_seconds:.1f}", rate, f"{r.assemble_seconds:.1f}",
                 build_rate, f"{r.wall_seconds:.1f}", _gigabytes(r.peak_rss_bytes).removesuffix(" GB"))  # fmt: skip
        print(f"{r.kind:<12} {r.status:<10} " + " ".join(f"{c:>12}" for c in cells))
    for r in reports:
        print(f"{r.kind}: {r.path}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from braid.indexer.verify import indexes_under, verify_index

    failed = 0
    for folder in args.index:
        for path in indexes_under(Path(folder)):
            problems = verify_index(path)
            manifest = Manifest.read(path)
            if problems:
                failed += 1
                print(f"FAILED  {path} ({manifest.kind}, {manifest.doc_count} documents)")
                for problem in problems:
                    print(f"        - {problem}")
            else:
                print(f"ok      {path} ({manifest.kind}, {manifest.doc_count} documents, {len(manifest.files)} files)")
    if failed:
        print(f"{failed} index(es) failed verification", file=sys.stderr)
        return 1
    return 0


def run_add(args: argparse.Namespace) -> int:
    corpus = Path(args.corpus)
    if not corpus.is_file():
        raise BraidError(f"corpus file {corpus} does not exist")
    documents = [(doc.doc_id, doc.contents) for doc in read_corpus(corpus)]
    count = add_documents(Path(args.index), documents)
    print(f"added {len(documents)} document(s): {args.index} now holds {count}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    count = delete_documents(Path(args.index), args.ids)
    print(f"deleted {len(set(args.ids))} document(s): {args.index} now holds {count}")
    return 0


def _gigabytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.2f} GB"


def _opened(index: Path) -> str:
    memory = opened_memory(index)
    loaded, mapped = memory.loaded_bytes / 1e6, memory.mapped_bytes / 1e6
    return f"{loaded:.1f} MB loaded, {mapped:.1f} MB memory-mapped (read on demand)"


def run_info(args: argparse.Namespace) -> int:
    manifest = Manifest.read(Path(args.index))
    if args.json:
        print(json.dumps({**manifest.__dict__, "opened_memory": opened_memory(Path(args.index)).to_json()}, indent=2,
                         sort_keys=True))  # fmt: skip
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
        ("peak RSS", _gigabytes(manifest.build.get("peak_rss_bytes"))),  # of the build
        ("when opened", _opened(Path(args.index))),
        ("braid version", f"{manifest.braid_version} (index format {manifest.format_version})"),
        ("created", manifest.created_at),
    ]
    build = manifest.build
    if "job" in build:
        rows += [
            ("build job", f"{build.get('job')} ({len(build.get('shards', []))} shards of {build.get('shard_size')})"),
            ("encode / assemble", f"{build.get('encode_seconds')}s / {build.get('assemble_seconds')}s"),
            ("versions", ", ".join(f"{k} {v}" for k, v in sorted(build.get("versions", {}).items()))),
        ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")
    return 0
