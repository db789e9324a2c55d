"""Near-real-time writes to a served collection: write throughput and latency, searches during writes, visibility.

For each collection size (the first N documents of the ``--base`` collections, concatenated; 0 = all of them) a
``braid serve`` process serves ``--pipeline`` (the default ``hybrid``) and, over HTTP on loopback:

1. the cost of a write: single-document upserts one after another with nothing else running (``--singles``),
   write p50/p99, beside the time to encode the same documents with the pipeline's neural encoders (MiniLM and
   SPLADE-tiny) in this process just before, the floor of an upsert: the ratio should be near 1 at every size;
2. searches alone: one client, ``--dataset``'s queries round robin, for ``--search-seconds``: p50/p99;
3. single-document upserts again while the search client runs: write p50/p99 and documents/s, search p50/p99
   during the writes, and whether each written document is found by the next search for its own text (visible
   when acknowledged);
4. batches of ``--batch-size`` upserts (``--batches`` of them), the same;
5. searches filtered on metadata selecting 50%, 5% and 0.1% of the collection, beside unfiltered ones: p50/p99
   and the hits returned (k = 10 whenever 10 documents match).

The documents written are copies of ``--dataset``'s under new ids, the same ones at every size.

    python -m benchmarks.live_writes --dataset scifact --sizes 5000 50000 --output results/live_writes.json \
        --base trec-dl-2019-passage-pool trec-dl-2020-passage-pool npl cacm lisa scifact
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.service_load import percentile
from benchmarks.service_process import start_server, stop_server
from braid.common.collection_writer import stage_collection
from braid.common.cpu_features import timing_flags
from braid.common.dataset_resolver import open_dataset_dir, resolve_dataset


class Searcher(threading.Thread):
    """One search client, as fast as answers come, recording latencies while ``recording`` is set."""

    def __init__(self, address: str, pipeline: str, queries: list[str]) -> None:
        super().__init__(daemon=True)
        self.address, self.pipeline, self.queries = address, pipeline, queries
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            for query in itertools.cycle(self.queries):
                if self.stop.is_set():
                    return
                tick = time.perf_counter()
                response = client.post(f"{self.address}/v1/search", json={"query": query, "pipeline": self.pipeline})
                self.latencies.append((time.perf_counter() - tick) * 1000)
                self.errors += response.status_code != 200

    def window(self) -> tuple[float, float, int]:
        values = list(self.latencies)
        return round(percentile(values, 0.5), 1), round(percentile(values, 0.99), 1), len(values)


def sample_collection(bases: list, size: int, folder: Path) -> Path:
    """The first ``size`` documents of ``bases`` (concatenated; ids prefixed by their collection's name when there
    are several) as a collection with an integer field ``bucket`` (position mod 1000, what the filters select on)."""
    documents = itertools.chain.from_iterable(
        ((f"{base.name}/{doc.doc_id}" if len(bases) > 1 else doc.doc_id, doc) for doc in base.iter_corpus())
        for base in bases
    )
    name = f"{'mix' if len(bases) > 1 else bases[0].name}-{size or 'all'}"
    source = folder / f"{name}.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for position, (doc_id, doc) in enumerate(itertools.islice(documents, size or None)):
            row = {"id": doc_id, "title": doc.title, "text": doc.text, "bucket": position % 1000}
            handle.write(json.dumps(row) + "\n")
    return stage_collection(name, source, folder / "collections", fields={"bucket": "integer"}).publish()


def written_rows(dataset) -> list[dict]:
    """The documents to write: ``dataset``'s, under new ids, with a ``bucket`` value."""
    return [
        {"id": f"live-{i}-{doc.doc_id}", "title": doc.title, "text": doc.text, "metadata": {"bucket": i % 1000}}
        for i, doc in enumerate(dataset.iter_corpus())
    ]


#: Filters by the share of the collection they select, over ``bucket`` (position mod 1000).
FILTERS = {
    "none": None,
    "50%": {"field": "bucket", "lt": 500},
    "5%": {"field": "bucket", "lt": 50},
    "0.1%": {"field": "bucket", "eq": 7},
}


def filter_phase(address: str, pipeline: str, queries: list[str], count: int) -> dict:
    """Sequential searches of the first ``count`` queries under each filter: p50/p99 and hits returned."""
    results = {}
    with httpx.Client(timeout=120) as client:
        for label, spec in FILTERS.items():
            latencies, hits = [], []
            for query in queries[:count]:
                body = {"query": query, "pipeline": pipeline, "k": 10, **({"filter": spec} if spec else {})}
                tick = time.perf_counter()
                response = client.post(f"{address}/v1/search", json=body)
                latencies.append((time.perf_counter() - tick) * 1000)
                response.raise_for_status()
                hits.append(len(response.json()["hits"]))
            results[label] = {
                "p50_ms": round(percentile(latencies, 0.5), 1),
                "p99_ms": round(percentile(latencies, 0.99), 1),
                "mean_hits": round(statistics.mean(hits), 2),
            }
    return results


def write_phase(
    address: str, key: str, pipeline: str, batches: list[list[dict]], searcher: Searcher | None = None
) -> dict:
    """Upsert ``batches`` one after another (``searcher``: while it runs), each probed by a search for its text."""
    latencies, visible = [], 0
    if searcher is not None:
        searcher.latencies.clear()
    started = time.perf_counter()
    with httpx.Client(timeout=300, headers={"authorization": f"Bearer {key}"}) as client:
        for batch in batches:
            tick = time.perf_counter()
            response = client.put(f"{address}/v1/pipelines/{pipeline}/documents", json={"documents": batch})
            latencies.append((time.perf_counter() - tick) * 1000)
            response.raise_for_status()
            probe = batch[0]
            query = f"{probe['title']} {probe['text']}"[:1000]
            hits = client.post(f"{address}/v1/search", json={"query": query, "pipeline": pipeline, "k": 10}).json()
            visible += probe["id"] in [hit["doc_id"] for hit in hits["hits"]]
    seconds = time.perf_counter() - started
    documents = sum(len(batch) for batch in batches)
    result = {
        "writes": len(batches),
        "documents": documents,
        "docs_per_s": round(documents / seconds, 1),
        "write_p50_ms": round(percentile(latencies, 0.5), 1),
        "write_p99_ms": round(percentile(latencies, 0.99), 1),
        "visible_at_once": f"{visible}/{len(batches)}",
    }
    if searcher is not None:
        search_p50, search_p99, searches = searcher.window()
        result.update(search_p50_ms=search_p50, search_p99_ms=search_p99, searches=searches)
    return result


def encode_floor(texts: list[str]) -> dict:
    """Milliseconds to encode one document with the hybrid's neural encoders (dense, then SPLADE), in this process:
    p50 of each and of their sum per document."""
    from braid.indexer.embedding_index import encoder_for as dense_encoder
    from braid.indexer.splade_index import encoder_for as splade_encoder
    from braid.pipelines.spec import load_pipeline

    spec = load_pipeline("hybrid")
    params = {stage.kind: stage.index_params() for stage in spec.retrievers}
    dense, splade = dense_encoder(params["dense"]), splade_encoder(params["splade"])
    dense.encode(texts[:2])
    splade.encode_documents(texts[:2], progress=False)
    timings = {"dense": [], "splade": [], "both": []}
    for text in texts:
        tick = time.perf_counter()
        dense.encode([text])
        middle = time.perf_counter()
        splade.encode_documents([text], progress=False)
        end = time.perf_counter()
        timings["dense"].append((middle - tick) * 1000)
        timings["splade"].append((end - middle) * 1000)
        timings["both"].append((end - tick) * 1000)
    return {f"{name}_p50_ms": round(statistics.median(values), 1) for name, values in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="scifact", help="queries searched, and documents written (copies)")
    parser.add_argument("--base", nargs="+", help="collections whose documents are served (default: --dataset)")
    parser.add_argument("--pipeline", default="hybrid")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 0], help="documents served (0: all)")
    parser.add_argument("--singles", type=int, default=60)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--search-seconds", type=float, default=10.0)
    parser.add_argument("--filter-queries", type=int, default=100, help="queries per filter selectivity")
    parser.add_argument("--index-dir", type=Path, help="where the samples' indexes go (default: a temporary folder)")
    parser.add_argument("--log", type=Path, default=Path("results/live_writes.log"))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    dataset = resolve_dataset(args.dataset, download=False)
    bases = [resolve_dataset(name, download=False) for name in args.base or [args.dataset]]
    queries = list(dataset.queries().values())
    rows = written_rows(dataset)
    needed = 2 * args.singles + args.batches * args.batch_size
    if len(rows) < needed:
        raise SystemExit(f"{dataset.name} has {len(rows)} documents; this run writes {needed}")
    report = {
        "dataset": dataset.name,
        "base": [base.name for base in bases],
        "pipeline": args.pipeline,
        "cpu": timing_flags(),
        "cores": os.cpu_count(),
        "sizes": [],
    }
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="braid-live-") as scratch:
        index_dir = args.index_dir or Path(scratch) / "indexes"
        for size in args.sizes:
            root = sample_collection(bases, size, Path(scratch))
            shutil.rmtree(index_dir / root.name / "_writes", ignore_errors=True)  # an earlier run's writes
            key = secrets.token_hex(16)
            serve = ["--dataset", str(root), "--index-dir", str(index_dir), "--pipelines", args.pipeline,
                     "--build-missing"]  # fmt: skip
            tick = time.perf_counter()
            process, ready = start_server(serve, key, args.log, timeout=7200)
            started = time.perf_counter() - tick
            address = ready["http"]
            idle = rows[: args.singles]
            floor = encode_floor([f"{row['title']} {row['text']}" for row in idle])
            alone_writes = write_phase(address, key, args.pipeline, [[row] for row in idle])
            searcher = Searcher(address, args.pipeline, queries)
            searcher.start()
            time.sleep(args.search_seconds)
            alone = searcher.window()
            singles = [[row] for row in rows[args.singles : 2 * args.singles]]
            rest = rows[2 * args.singles :]
            batches = [rest[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.batches)]
            entry = {
                "documents": sum(1 for _ in open_dataset_dir(root).iter_corpus()),
                "server_start_s": round(started, 1),
                "encode_one_document": floor,
                "single_upserts_alone": alone_writes,
                "upsert_over_encoding": round(alone_writes["write_p50_ms"] / floor["both_p50_ms"], 2),
                "search_alone": {"p50_ms": alone[0], "p99_ms": alone[1], "searches": alone[2]},
                "single_upserts": write_phase(address, key, args.pipeline, singles, searcher),
                "batch_upserts": write_phase(address, key, args.pipeline, [b for b in batches if b], searcher),
            }
            searcher.stop.set()
            searcher.join(60)
            entry["filtered_search"] = filter_phase(address, args.pipeline, queries, args.filter_queries)
            entry["search_errors"] = searcher.errors
            entry["exit_code"] = stop_server(process)
            report["sizes"].append(entry)
            print(json.dumps(entry), flush=True)
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
