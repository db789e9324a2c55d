"""Repeated queries with and without the caches: a Zipf-like replay against ``braid serve`` over HTTP.

A replay of ``--requests`` searches draws each query from ``--dataset``'s queries (all splits) with probability
proportional to 1 / rank^s (``--zipf``, ranks in a seeded random order), so that a few queries make many requests,
as search traffic does; the share of requests that repeat an earlier one is reported. The same replay runs against
three servers started one after the other on the same indexes: both caches off (``--result-cache 0
--query-cache-mb 0``), the query-encoding cache alone (``--result-cache 0``), and both (the default), with
``--clients`` concurrent HTTP clients. Reported: req/s, p50 and p99 latency, and the caches' hit counts from
/metrics. Then, on the cached server, ``--writes`` single-document upserts, each followed by a search for the
written text that must return the written document first (never a stale answer after a write). The servers run on
a scratch index folder that links the collection's built indexes, so those writes never reach the collection
itself (a collection with writes is searched through segments, and every later benchmark would measure that).

    python -m benchmarks.repeated_queries --dataset scifact --pipeline hybrid --requests 2000 --clients 8 \\
        --output results/repeated_queries.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import secrets
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from benchmarks.service_load import percentile
from benchmarks.service_process import start_server, stop_server
from braid.common.cpu_features import timing_flags
from braid.common.dataset import Dataset
from braid.common.dataset_resolver import resolve_dataset
from braid.pipelines.pipeline import open_pipeline
from braid.pipelines.spec import load_pipeline


def zipf_replay(queries: list[str], requests: int, exponent: float, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(queries))
    weights = 1.0 / np.arange(1, len(queries) + 1) ** exponent
    picks = rng.choice(len(queries), size=requests, p=weights / weights.sum())
    return [queries[order[pick]] for pick in picks]


def replay(address: str, pipeline: str, requests: list[str], clients: int) -> dict:
    work: queue.Queue[str] = queue.Queue()
    for text in requests:
        work.put(text)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=address, timeout=60) as http:
            while True:
                try:
                    text = work.get_nowait()
                except queue.Empty:
                    return
                tick = time.perf_counter()
                answer = http.post("/v1/search", json={"query": text, "k": 10, "pipeline": pipeline})
                with lock:
                    latencies.append((time.perf_counter() - tick) * 1000)
                    if answer.status_code != 200:
                        errors.append(f"{answer.status_code} {answer.text[:100]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {
        "requests": len(requests),
        "seconds": round(seconds, 2),
        "req_per_s": round(len(requests) / seconds, 2),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "errors": errors[:5],
    }


def cache_counts(address: str) -> dict:
    text = httpx.get(f"{address}/metrics").text
    counts = {}
    for name, what, value in re.findall(r'^(braid_\w+cache)\{(?:pipeline="[^"]*",)?what="(\w+)"\} (\S+)$', text, re.M):
        counts[f"{name}_{what}"] = counts.get(f"{name}_{what}", 0) + float(value)
    return counts


def scratch_index_dir(index_dir: Path, collection: str, into: Path) -> Path:
    """An index folder under ``into`` whose ``collection`` links every built index of ``index_dir``'s (a live
    collection opens them read-only) and copies its writes, if it has any: writes made there stay there."""
    source = index_dir / collection
    target = into / collection
    target.mkdir(parents=True)
    if source.is_dir():
        for entry in source.iterdir():
            if entry.name == "_writes":
                shutil.copytree(entry, target / entry.name)
            else:
                (target / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    return into


def writes_are_seen(address: str, api_key: str, pipeline: str, count: int) -> dict:
    seen = 0
    headers = {"authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=address, timeout=120) as http:
        for number in range(count):
            doc_id = f"repeat-bench-{secrets.token_hex(4)}-{number}"
            text = f"zebrafish {secrets.token_hex(6)} regeneration cache check {number}"
            query = {"query": text, "k": 1, "pipeline": pipeline}
            http.post("/v1/search", json=query)  # cached before the write
            written = http.put(f"/v1/pipelines/{pipeline}/documents", headers=headers,
                               json={"documents": [{"id": doc_id, "text": text}]})  # fmt: skip
            written.raise_for_status()
            hits = http.post("/v1/search", json=query).json()["hits"]
            seen += bool(hits) and hits[0]["doc_id"] == doc_id
    return {"writes": count, "found_first_by_the_next_search": seen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--pipeline", default="hybrid")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--zipf", type=float, default=1.1, help="exponent s of the query popularity 1 / rank^s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--writes", type=int, default=10)
    parser.add_argument("--data-dir", default=os.environ.get("BRAID_DATA_DIR", "data"))
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    dataset = resolve_dataset(args.dataset, Path(args.data_dir))
    queries = sorted(set(dataset.queries().values()))
    requests = zipf_replay(queries, args.requests, args.zipf, args.seed)
    repeats = 1 - len(set(requests)) / len(requests)
    api_key = secrets.token_hex(16)
    scratch = Path(tempfile.mkdtemp(prefix="repeated-queries-"))
    try:
        return replay_all(args, dataset, requests, repeats, api_key, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def replay_all(
    args: argparse.Namespace, dataset: Dataset, requests: list[str], repeats: float, api_key: str, scratch: Path
) -> int:
    # Missing indexes are built into --index-dir (kept for later runs); the servers then run on the scratch view.
    open_pipeline(load_pipeline(args.pipeline), dataset, Path(args.index_dir), follow_writes=False).close()
    index_dir = scratch_index_dir(Path(args.index_dir), dataset.name, scratch / "indexes")
    common = ["--dataset", args.dataset, "--data-dir", args.data_dir, "--index-dir", str(index_dir),
              "--pipelines", args.pipeline]  # fmt: skip
    report: dict = {"dataset": args.dataset, "pipeline": args.pipeline, "cpu_flags": timing_flags(),
                    "cores": os.cpu_count(), "requests": args.requests, "distinct_queries": len(set(requests)),
                    "repeat_share": round(repeats, 4), "zipf": args.zipf}  # fmt: skip
    log_dir = Path(args.output).parent if args.output else Path(".")
    log_dir.mkdir(parents=True, exist_ok=True)
    runs = (
        ("without caches", ["--result-cache", "0", "--query-cache-mb", "0"]),
        ("query cache only", ["--result-cache", "0"]),
        ("with caches", []),
    )
    for label, extra in runs:
        log = log_dir / f"repeated_queries_{label.replace(' ', '_')}.log"
        process, ready = start_server([*common, *extra], api_key, log)
        try:
            address = ready["http"]
            # Warm the models (first calls compile and allocate) on texts the replay never sends: caches stay cold.
            replay(address, args.pipeline, [f"warm-up request {number} about cells" for number in range(30)], 2)
            result = replay(address, args.pipeline, requests, args.clients)
            result["caches"] = cache_counts(address)
            if not extra and args.writes:
                result["staleness"] = writes_are_seen(address, api_key, args.pipeline, args.writes)
        finally:
            stop_server(process)
        report[label] = result
        print(f"{label}: {json.dumps(result)}", flush=True)
    ratio = report["with caches"]["req_per_s"] / report["without caches"]["req_per_s"]
    report["req_per_s_ratio"] = round(ratio, 2)
    machine = f"CPU {platform.machine()} {os.cpu_count()} cores ({timing_flags()})"
    print(f"\n{args.pipeline} on {args.dataset}, {args.requests} requests ({repeats:.0%} repeats, Zipf s={args.zipf}), "
          f"{args.clients} HTTP clients; {machine}")  # fmt: skip
    print(f"{'':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}")
    for label, _ in runs:
        row = report[label]
        print(f"{label:<16}{row['req_per_s']:>8.1f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}")
    print(f"with / without: {ratio:.2f}x req/s")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
