"""Near-real-time writes to a served collection: write throughput and latency, searches during writes, visibility.

For each collection size (the first N documents of ``--dataset``; 0 = all of it) a ``braid serve`` process serves
``--pipeline`` (the default ``hybrid``) and, over HTTP on loopback:

1. searches alone: one client, the dataset's queries round robin, for ``--search-seconds``: p50/p99;
2. single-document upserts, one after another (``--singles`` of them), while the search client runs: write
   p50/p99 and documents/s, search p50/p99 during the writes, and whether each written document is found by the
   next search for its own text (visible when acknowledged);
3. batches of ``--batch-size`` upserts (``--batches`` of them), the same;
4. searches filtered on metadata selecting 50%, 5% and 0.1% of the collection, beside unfiltered ones: p50/p99
   and the hits returned (k = 10 whenever 10 documents match).

Beside it, in this process: the time to encode one document with the pipeline's neural encoders (MiniLM and
SPLADE-tiny), the floor of an upsert's cost: a write should cost little more, whatever the collection's size.

    python -m benchmarks.live_writes --dataset scifact --sizes 1000 0 --output results/live_writes.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.service_process import start_server, stop_server
from braid.common.collection_writer import stage_collection
from braid.common.dataset_resolver import resolve_dataset


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_flags() -> str:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor()
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(flag for flag in wanted if f" {flag}" in flags)


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


def sample_collection(dataset, size: int, folder: Path) -> tuple[Path, list[dict]]:
    """The first ``size`` documents as a collection with an integer field ``bucket`` (position mod 1000, what the
    filters select on), and the next documents (to write) as JSON rows."""
    documents = list(dataset.iter_corpus())
    kept = documents[:size] if size else documents
    source = folder / f"{dataset.name}-{size or 'all'}.jsonl"
    with source.open("w", encoding="utf-8") as handle:
        for position, doc in enumerate(kept):
            row = {"id": doc.doc_id, "title": doc.title, "text": doc.text, "bucket": position % 1000}
            handle.write(json.dumps(row) + "\n")
    name = f"{dataset.name}-{size or 'all'}"
    root = stage_collection(name, source, folder / "collections", fields={"bucket": "integer"}).publish()
    # Documents to write: the rest of the collection, else copies of its documents under new ids.
    pool = documents[len(kept) :] or documents
    rows = [
        {"id": f"live-{i}-{doc.doc_id}", "title": doc.title, "text": doc.text, "metadata": {"bucket": i % 1000}}
        for i, doc in enumerate(pool)
    ]
    return root, rows


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


def write_phase(address: str, key: str, pipeline: str, batches: list[list[dict]], searcher: Searcher) -> dict:
    latencies, visible = [], 0
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
    search_p50, search_p99, searches = searcher.window()
    documents = sum(len(batch) for batch in batches)
    return {
        "writes": len(batches),
        "documents": documents,
        "docs_per_s": round(documents / seconds, 1),
        "write_p50_ms": round(percentile(latencies, 0.5), 1),
        "write_p99_ms": round(percentile(latencies, 0.99), 1),
        "visible_at_once": f"{visible}/{len(batches)}",
        "search_p50_ms": search_p50,
        "search_p99_ms": search_p99,
        "searches": searches,
    }


def encode_floor(texts: list[str]) -> dict:
    """Milliseconds to encode one document with the hybrid's neural encoders (dense, then SPLADE), in this process."""
    from braid.indexer.embedding_index import encoder_for as dense_encoder
    from braid.indexer.splade_index import encoder_for as splade_encoder
    from braid.pipelines.spec import load_pipeline

    spec = load_pipeline("hybrid")
    params = {stage.kind: stage.index_params() for stage in spec.retrievers}
    dense, splade = dense_encoder(params["dense"]), splade_encoder(params["splade"])
    dense.encode(texts[:2])
    splade.encode_documents(texts[:2], progress=False)
    timings = {"dense": [], "splade": []}
    for text in texts:
        tick = time.perf_counter()
        dense.encode([text])
        timings["dense"].append((time.perf_counter() - tick) * 1000)
        tick = time.perf_counter()
        splade.encode_documents([text], progress=False)
        timings["splade"].append((time.perf_counter() - tick) * 1000)
    return {f"{name}_p50_ms": round(statistics.median(values), 1) for name, values in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="scifact")
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
    queries = list(dataset.queries().values())
    report = {"dataset": dataset.name, "pipeline": args.pipeline, "cpu": cpu_flags(), "sizes": []}
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="braid-live-") as scratch:
        index_dir = args.index_dir or Path(scratch) / "indexes"
        for size in args.sizes:
            root, rows = sample_collection(dataset, size, Path(scratch))
            shutil.rmtree(index_dir / root.name / "_writes", ignore_errors=True)  # an earlier run's writes
            key = secrets.token_hex(16)
            serve = ["--dataset", str(root), "--index-dir", str(index_dir), "--pipelines", args.pipeline,
                     "--build-missing"]  # fmt: skip
            tick = time.perf_counter()
            process, ready = start_server(serve, key, args.log, timeout=3600)
            started = time.perf_counter() - tick
            address = ready["http"]
            searcher = Searcher(address, args.pipeline, queries)
            searcher.start()
            time.sleep(args.search_seconds)
            alone = searcher.window()
            singles = [[row] for row in rows[: args.singles]]
            rest = rows[args.singles :]
            batches = [rest[i * args.batch_size : (i + 1) * args.batch_size] for i in range(args.batches)]
            entry = {
                "documents": size or sum(1 for _ in dataset.iter_corpus()),
                "server_start_s": round(started, 1),
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
    report["encode_one_document"] = encode_floor([f"{row['title']} {row['text']}" for row in rows[:40]])
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
