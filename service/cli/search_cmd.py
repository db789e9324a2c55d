"""``braid search``: ranked hits for one query."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.indexer.manifest import Manifest
from braid.pipelines.pipeline import (
    ExplainedHit,
    Pipeline,
    SearchOptions,
    check_query,
    load_pipeline,
    open_index_retriever,
    open_pipeline,
)
from braid.retriever.hit import Hit
from braid.service.cli.common import add_data_args, parse_params, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    search = subparsers.add_parser("search", help="print the ranked hits for one query")
    search.add_argument("query", help="query text")
    source = search.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        "--collection",
        dest="dataset",
        help="collection or dataset, by name or path (indexes built if missing)",
    )
    source.add_argument("--index", help="search this index folder directly")
    search.add_argument("--pipeline", default="bm25", help="built-in pipeline name or TOML file (default: bm25)")
    search.add_argument("--param", action="append", metavar="KEY=VALUE", help="search parameter with --index")
    search.add_argument(
        "-k", type=positive_int, default=None, help="number of hits (default: 10, or every document of a smaller one)"
    )
    search.add_argument(
        "--explain", action="store_true", help="show each retriever's rank and score and each cascade stage's score"
    )
    search.add_argument(
        "--filter",
        metavar="JSON",
        help='metadata filter, e.g. \'{"field": "year", "gte": 2020}\' (fields declared at collection creation)',
    )
    search.add_argument("--json", action="store_true", help="print hits as JSON")
    add_data_args(search)
    search.set_defaults(handler=run)


def _text_lookup(pipeline: Pipeline, dataset, doc_ids: set[str]):
    """Texts for display: from the index where it stores them (Lucene BM25), else from the corpus."""
    missing = {doc_id for doc_id in doc_ids if pipeline.document_text(doc_id) is None}
    corpus = {doc.doc_id: doc.contents for doc in dataset.iter_corpus() if doc.doc_id in missing} if missing else {}
    return lambda doc_id: corpus.get(doc_id) or pipeline.document_text(doc_id)


def _filter(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise BraidError(f"--filter is not JSON ({error.msg} at column {error.colno})") from None


def _explanation(hit: ExplainedHit) -> str:
    parts = [
        f"{name} #{source.rank} ({source.score:.4f})" if source.rank else f"{name} -"
        for name, source in hit.sources.items()
    ]
    if hit.fused_score is not None:
        parts.append(f"fused {hit.fused_score:.6f}")
    parts += [f"{stage} {score:.4f}" for stage, score in hit.stages.items()]
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    check_query(args.query)
    explained: list[ExplainedHit] | None = None
    if args.index:
        if args.filter:
            raise BraidError("--filter needs a collection (--collection); an index folder keeps no metadata")
        if args.explain:
            raise BraidError("--explain needs a pipeline (--dataset); a single index has nothing to explain")
        retriever = open_index_retriever(Path(args.index), parse_params(args.param), args.threads)
        documents = Manifest.read(Path(args.index)).doc_count
        if args.k is not None and args.k > documents:
            raise BraidError(f"-k must be between 1 and the collection's {documents} documents, got {args.k}")
        hits = retriever.search(args.query, args.k or min(10, documents))
        text_of = retriever.document_text
    else:
        if args.param:
            raise BraidError("--param applies to --index; with --dataset, set parameters in the pipeline file")
        spec = load_pipeline(args.pipeline)
        dataset = resolve_dataset(args.dataset, args.data_dir)
        pipeline: Pipeline = open_pipeline(spec, dataset, Path(args.index_dir), args.threads)
        explained, _ = pipeline.search_explained(args.query, args.k, SearchOptions(filter=_filter(args.filter)))
        hits = [Hit(hit.doc_id, hit.score) for hit in explained]
        # A passage collection's hits are documents; their text is that of the passage that matched.
        shown = {hit.doc_id: hit.passage or hit.doc_id for hit in explained}
        lookup = _text_lookup(pipeline, dataset, set(shown.values()))
        text_of = lambda doc_id: lookup(shown[doc_id])  # noqa: E731
    if args.json:
        rows = [{"rank": i, "doc_id": h.doc_id, "score": h.score} for i, h in enumerate(hits, 1)]
        if explained is not None:
            for row, hit in zip(rows, explained, strict=True):
                if hit.passage is not None:
                    row["passage"] = hit.passage
        if args.explain and explained is not None:
            rows = [{**row, **hit.to_json()} for row, hit in zip(rows, explained, strict=True)]
        print(json.dumps(rows))
        return 0
    if not hits:
        print("no hits")
    for rank, hit in enumerate(hits, start=1):
        snippet = textwrap.shorten(text_of(hit.doc_id) or "", width=100, placeholder=" ...")
        print(f"{rank:>3}  {hit.score:9.4f}  {hit.doc_id:<12}  {snippet}")
        if args.explain and explained is not None:
            print(f"{'':>5}{_explanation(explained[rank - 1])}")
    return 0
