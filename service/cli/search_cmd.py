"""``braid search``: ranked hits for one query."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from eval.dataset_resolver import resolve_dataset
from eval.errors import BraidError
from retriever.pipeline import Pipeline, check_query, load_pipeline, open_index_retriever, open_pipeline
from service.cli.common import add_data_args, parse_params, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="print the ranked hits for one query")
    search.add_argument("query", help="query text")
    source = search.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="dataset path or name (its pipeline indexes are built if missing)")
    source.add_argument("--index", help="search this index folder directly")
    search.add_argument("--pipeline", default="bm25", help="built-in pipeline name or TOML file (default: bm25)")
    search.add_argument("--param", action="append", metavar="KEY=VALUE", help="search parameter with --index")
    search.add_argument("-k", type=positive_int, default=10, help="number of hits (default: 10)")
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    add_data_args(search)
    search.set_defaults(handler=run)


def _text_lookup(pipeline: Pipeline, dataset, doc_ids: set[str]):
    """Texts for display: from the index where it stores them (Lucene BM25), else from the corpus."""
    missing = {doc_id for doc_id in doc_ids if pipeline.document_text(doc_id) is None}
    corpus = {doc.doc_id: doc.contents for doc in dataset.iter_corpus() if doc.doc_id in missing} if missing else {}
    return lambda doc_id: corpus.get(doc_id) or pipeline.document_text(doc_id)


def run(args: argparse.Namespace) -> int:
    check_query(args.query)
    if args.index:
        retriever = open_index_retriever(Path(args.index), parse_params(args.param), args.threads)
        hits = retriever.search(args.query, args.k)
        text_of = retriever.document_text
    else:
        if args.param:
            raise BraidError("--param applies to --index; with --dataset, set parameters in the pipeline file")
        dataset = resolve_dataset(args.dataset, args.data_dir)
        pipeline: Pipeline = open_pipeline(load_pipeline(args.pipeline), dataset, Path(args.index_dir), args.threads)
        hits = pipeline.search(args.query, args.k)
        text_of = _text_lookup(pipeline, dataset, {hit.doc_id for hit in hits})
    if args.json:
        print(json.dumps([{"rank": i, "doc_id": h.doc_id, "score": h.score} for i, h in enumerate(hits, 1)]))
        return 0
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        snippet = textwrap.shorten(text_of(hit.doc_id) or "", width=100, placeholder=" ...")
        print(f"{rank:>3}  {hit.score:9.4f}  {hit.doc_id:<12}  {snippet}")
    return 0
