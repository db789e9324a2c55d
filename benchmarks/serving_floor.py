"""The hybrid against its own parts, served: CPU per query, requests/s, tail latency, all as ratios of one run.

One ``braid serve`` holds every pipeline measured (``--parts`` and ``--hybrid``, and ``--max`` when given) with both
caches off, so every request does all of its work. Measured, one pipeline at a time:

1. **Server CPU per query**: ``--cpu-queries`` distinct queries sent one after the other over HTTP; the server
   process's CPU time (user + system, every thread: Lucene's JVM, OpenVINO's and faiss's pools included, read with
   psutil) divided by the queries; also each query's latency seen by the client (single-query p50).
2. **Served load**: ``--clients`` concurrent clients (each with its own keep-alive HTTP client or gRPC channel, as
   :mod:`benchmarks.service_load` runs them) for ``--duration`` seconds per pipeline, protocol and client count,
   over the dataset's queries round robin: requests/s, p50 and p99, and the server's CPU per request under load.

Both follow ``--warmup`` untimed queries per pipeline (a fresh JVM compiles Lucene's search paths over the first few
hundred; each row's ``jit_ms_per_query`` is what its compiler threads still spent while it was timed). Both run in
``--rounds`` slices with the pipelines taking turns (each cell's queries and seconds split evenly), so
that the machine's drift during the run (a shared VM's throughput moves by 2x between minutes) reaches every
pipeline alike and the ratios compare like with like.

Reported ratios (the issue's goals): the hybrid's CPU per query / the sum of its parts' (<= 1), its requests/s /
the harmonic sum of its parts' (1 / sum of 1 / rate: what it would serve if it cost exactly their sum; >= 1), and its
p99 / p50 at each client count (<= 4 at 8 clients). With ``--max``: that pipeline's single-query p50 / the hybrid's
(<= 3), its batch queries/s / the hybrid's (``Pipeline.batch_search`` over the test split in this process, as
``braid eval`` times it; >= 0.5) and its index size. With ``--repeats``, :mod:`benchmarks.repeated_queries` runs
afterwards (the caches' req/s ratio on a Zipf replay), and on a CPU that computes bfloat16 natively
:mod:`benchmarks.ranker_speed` runs float32 and bfloat16 interleaved (the reranker's speedup, cold and warm, 20
documents of 128 tokens); both land in the same report.

    python -m benchmarks.serving_floor --dataset scifact --index-dir indexes --max hybrid-max \\
        --output results/serving_floor.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import time
from argparse import Namespace
from pathlib import Path

import httpx
import psutil

from benchmarks.service_load import Run, percentile
from benchmarks.service_process import start_server, stop_server
from braid.common.cpu_features import native_bfloat16, timing_flags
from braid.common.dataset_resolver import resolve_dataset
from braid.pipelines.pipeline import load_pipeline, open_pipeline


def server_cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def jit_cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds the server's JVM has spent compiling (its C1/C2 compiler threads; 0 where /proc does not name
    threads): a report that shows this near 0 per query measured a warm JVM, not its warm-up."""
    total = 0.0
    for thread in process.threads():
        try:
            name = Path(f"/proc/{process.pid}/task/{thread.id}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith(("C1 CompilerThre", "C2 CompilerThre")):
            total += thread.user_time + thread.system_time
    return total


def sequential(address: str, process: psutil.Process, pipeline: str, queries: list[str]) -> dict:
    """Queries one after the other: the server's CPU per query and the client's latency per query (``latencies_ms``
    kept for :func:`combined_sequential`)."""
    latencies = []
    with httpx.Client(base_url=address, timeout=120) as http:
        before, jit_before = server_cpu_seconds(process), jit_cpu_seconds(process)
        for text in queries:
            tick = time.perf_counter()
            response = http.post("/v1/search", json={"query": text, "k": 10, "pipeline": pipeline})
            latencies.append((time.perf_counter() - tick) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{pipeline}: HTTP {response.status_code}: {response.text[:500]}")
        cpu, jit = server_cpu_seconds(process) - before, jit_cpu_seconds(process) - jit_before
    return {
        "queries": len(queries),
        "cpu_ms_per_query": round(cpu / len(queries) * 1000, 2),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "cpu_seconds": cpu,
        "jit_seconds": jit,
        "latencies_ms": latencies,
    }


def combined_sequential(chunks: list[dict]) -> dict:
    """A pipeline's sequential row from its interleaved chunks."""
    latencies = [value for chunk in chunks for value in chunk["latencies_ms"]]
    cpu = sum(chunk["cpu_seconds"] for chunk in chunks)
    jit = sum(chunk["jit_seconds"] for chunk in chunks)
    return {
        "queries": len(latencies),
        "cpu_ms_per_query": round(cpu / len(latencies) * 1000, 2),
        "jit_ms_per_query": round(jit / len(latencies) * 1000, 2),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


def loaded(addresses: dict, process: psutil.Process, pipeline: str, protocol: str, clients: int, queries, seconds):
    """``clients`` concurrent clients for ``seconds`` (benchmarks.service_load's Run): the run, its latencies in ms
    and the server's CPU seconds during it."""
    settings = Namespace(clients=clients, duration=seconds, max_requests=10**9, timeout=120.0)
    run = Run(addresses, pipeline, protocol, queries, settings)
    before, jit_before = server_cpu_seconds(process), jit_cpu_seconds(process)
    row = run.execute()
    row["jit_seconds"] = jit_cpu_seconds(process) - jit_before
    return row, [value * 1000 for value in run.latencies], server_cpu_seconds(process) - before


def merged(slices: list[tuple[dict, list[float], float]]) -> dict:
    """One load cell from its interleaved slices: requests/s over their time, percentiles over every latency."""
    first = slices[0][0]
    ms = [value for _, latencies, _ in slices for value in latencies]
    seconds = sum(row["seconds"] for row, _, _ in slices)
    errors = sum(row["errors"] for row, _, _ in slices)
    jit = sum(row["jit_seconds"] for row, _, _ in slices)
    row = {"pipeline": first["pipeline"], "protocol": first["protocol"], "clients": first["clients"],
           "slices": len(slices), "seconds": round(seconds, 1), "requests": len(ms) + errors, "errors": errors,
           "qps": round(len(ms) / seconds, 1), "p50_ms": round(statistics.median(ms), 1) if ms else None,
           "p99_ms": round(percentile(ms, 0.99), 1) if ms else None}  # fmt: skip
    cpu = sum(cpu_seconds for _, _, cpu_seconds in slices)
    row["cpu_ms_per_query"] = round(cpu / len(ms) * 1000, 2) if ms else None
    row["jit_ms_per_query"] = round(jit / len(ms) * 1000, 2) if ms else None
    row["p99_over_p50"] = round(row["p99_ms"] / row["p50_ms"], 2) if row["p50_ms"] else None
    return row


def harmonic_sum(rates: list[float]) -> float:
    """Requests/s of a pipeline costing exactly the sum of parts serving ``rates`` (1 / sum of 1 / rate)."""
    return 1.0 / sum(1.0 / rate for rate in rates)


def batch_rate(spec_name: str, dataset, index_dir: Path, split: str) -> dict:
    """``Pipeline.batch_search`` over the split's queries in this process, as ``braid eval`` times it."""
    queries = dataset.split_queries(split)
    pipeline = open_pipeline(load_pipeline(spec_name), dataset, index_dir, os.cpu_count())
    try:
        pipeline.batch_search(dict(list(queries.items())[:8]), 10)  # first-call costs out of the timing
        tick = time.perf_counter()
        pipeline.batch_search(queries, 100)
        seconds = time.perf_counter() - tick
        return {"queries": len(queries), "q_per_s": round(len(queries) / seconds, 2), "index_mb": round(
            pipeline.index_bytes() / 1e6, 1)}  # fmt: skip
    finally:
        pipeline.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--split", default="test", help="queries of the batch timing (default: test)")
    parser.add_argument("--parts", nargs="+", default=["bm25", "dense", "splade"])
    parser.add_argument("--hybrid", default="hybrid")
    parser.add_argument("--max", help="a slower first stage held to the hybrid's speed, e.g. hybrid-max")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--protocols", nargs="+", default=["http", "grpc"], choices=["http", "grpc"])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per load cell (default: 20)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="each cell's queries and seconds split into this many slices, pipelines taking turns (default: 4)",
    )
    parser.add_argument("--cpu-queries", type=int, default=300, help="sequential queries per pipeline (300)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=300,
        help="untimed queries per pipeline first, the pipelines taking turns (default: 300; the JVM compiles "
        "Lucene's search paths over the first few hundred)",
    )
    parser.add_argument("--repeats", action="store_true", help="also run benchmarks.repeated_queries")
    parser.add_argument("--data-dir", default=os.environ.get("BRAID_DATA_DIR"))
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--serve-args", default="", help="extra braid serve arguments, one string")
    parser.add_argument("--output", type=Path, default=Path("results/serving_floor.json"))
    args = parser.parse_args(argv)

    if args.rounds < 1 or args.cpu_queries < args.rounds:
        raise SystemExit(f"--rounds must be in [1, --cpu-queries], got {args.rounds}")
    if args.warmup < 1:
        raise SystemExit(f"--warmup must be >= 1, got {args.warmup}")
    dataset = resolve_dataset(args.dataset, args.data_dir)
    queries = list(dataset.queries().values())
    if len(queries) < args.cpu_queries + 10:
        raise SystemExit(f"{args.dataset} has {len(queries)} queries: fewer than --cpu-queries {args.cpu_queries} + 10")
    served = [*args.parts, args.hybrid, *([args.max] if args.max else [])]  # names or TOML files
    # Requests name a pipeline; ratios are keyed by what the arguments said.
    names = {load_pipeline(item).name: item for item in served}
    pipelines = list(names)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    serve = ["--dataset", args.dataset, "--index-dir", args.index_dir, "--pipelines", *served,
             "--result-cache", "0", "--query-cache-mb", "0", "--build-missing",
             *(["--data-dir", args.data_dir] if args.data_dir else []), *args.serve_args.split()]  # fmt: skip
    report: dict = {
        "dataset": args.dataset,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU flags: {timing_flags()}",
        "serve_args": args.serve_args,
        "sequential": {},
        "load": [],
    }
    process, addresses = start_server(serve, secrets.token_hex(16), args.output.with_suffix(".server.log"))
    server = psutil.Process(process.pid)
    try:
        # Warm-up on the same texts for every pipeline, in turns of 50: first calls allocate, and the JVM's C2
        # compiler keeps compiling Lucene's search paths for the first few hundred queries of each kind (its threads
        # cost as much CPU as the searches themselves at first: 5.4 ms a query over a fresh server's first 100
        # bm25 queries, 0.5 over the next 100). The timed queries follow; their rows report the JIT's share.
        warm = [queries[i % len(queries)] for i in range(args.warmup)]
        for start in range(0, args.warmup, 50):
            for pipeline in pipelines:
                sequential(addresses["http"], server, pipeline, warm[start : start + 50])
        # Distinct queries within each pipeline's run, a different stretch of them for each pipeline (wrapping).
        # Pipelines take turns in --rounds slices, so a change in the machine's speed during the run (a shared VM's
        # throughput can move 2x between minutes) reaches every pipeline alike instead of whichever ran then.
        # (Both caches are off, so a text the warm-up already sent costs the same again.)
        texts = {name: [queries[(n * args.cpu_queries + i) % len(queries)] for i in range(args.cpu_queries)]
                 for n, name in enumerate(pipelines)}  # fmt: skip
        chunks: dict[str, list[dict]] = {name: [] for name in pipelines}
        for round_ in range(args.rounds):
            for pipeline in pipelines:
                part = texts[pipeline][round_ :: args.rounds]
                chunks[pipeline].append(sequential(addresses["http"], server, pipeline, part))
        for pipeline in pipelines:
            report["sequential"][pipeline] = row = combined_sequential(chunks[pipeline])
            print(f"sequential {pipeline}: {json.dumps(row)}", flush=True)
        cells = [(protocol, clients) for protocol in args.protocols for clients in args.clients]
        slices: dict[tuple, list] = {}
        for _ in range(args.rounds):
            for protocol, clients in cells:
                for pipeline in pipelines:
                    one = loaded(addresses, server, pipeline, protocol, clients, queries, args.duration / args.rounds)
                    slices.setdefault((protocol, clients, pipeline), []).append(one)
        for parts in slices.values():
            row = merged(parts)
            report["load"].append(row)
            print(f"load: {json.dumps(row)}", flush=True)
    finally:
        report["server_exit_code"] = stop_server(process)
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")  # what ran, if a later step fails
    if args.max:
        report["batch"] = {name: batch_rate(names[name], dataset, Path(args.index_dir), args.split) for name in
                           (pipelines[-2], pipelines[-1])}  # fmt: skip
    report["ratios"] = ratios(
        report, pipelines[: len(args.parts)], pipelines[len(args.parts)], args.max and pipelines[-1], args
    )
    if args.repeats:
        from benchmarks import repeated_queries

        output = args.output.with_name(args.output.stem + "_repeats.json")
        data = ["--data-dir", args.data_dir] if args.data_dir else []
        repeated_queries.main(["--dataset", args.dataset, "--pipeline", args.hybrid, "--index-dir", args.index_dir,
                               *data, "--output", str(output)])  # fmt: skip
        report["ratios"]["repeated_queries_req_per_s"] = json.loads(output.read_text())["req_per_s_ratio"]
    if native_bfloat16():
        from benchmarks import ranker_speed

        # 20 documents of 128 tokens: the shipped reranking pipelines' window and max_doc_tokens.
        output = args.output.with_name(f"{args.output.stem}_ranker.json")
        speed = ranker_speed.main(["--docs", "20", "--doc-tokens", "128", "--repeats", "5",
                                   "--dtype", "float32", "bfloat16", "--output", str(output)])  # fmt: skip
        # The listwise BlockRank prompt, and the rerank stage the shipped pipelines run (query likelihood).
        for key, name in (("block_cold", "cold"), ("block_warm", "warm"), ("stage_cold", "stage_cold"),
                          ("stage_warm", "stage_warm")):  # fmt: skip
            measure = f"{key}_float32_over_bfloat16_20docs"
            report["ratios"][f"rerank_{name}_float32_over_bfloat16"] = speed["ratios"][measure]
            rounds = speed["round_ratios"][measure]  # each round's own ratio: how far the machine's drift moved it
            report["ratios"][f"rerank_{name}_rounds"] = f"{rounds[0]} .. {rounds[-1]}"
    else:
        report["ratios"]["rerank_bfloat16"] = "not measured: this CPU lists neither avx512_bf16 nor amx_bf16"
    print_report(report, args, pipelines)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def ratios(report: dict, parts: list[str], hybrid: str, slow: str | None, args) -> dict:
    sequential, load = report["sequential"], report["load"]
    result: dict = {
        "hybrid_cpu_over_parts_sequential": round(
            sequential[hybrid]["cpu_ms_per_query"] / sum(sequential[p]["cpu_ms_per_query"] for p in parts), 3
        )
    }
    for protocol in args.protocols:
        for clients in args.clients:
            rows = {row["pipeline"]: row for row in load if row["protocol"] == protocol and row["clients"] == clients}
            where = f"{protocol}_{clients}"
            fused = rows[hybrid]
            parts_cpu = sum(rows[p]["cpu_ms_per_query"] for p in parts)
            result[f"hybrid_cpu_over_parts_{where}"] = round(fused["cpu_ms_per_query"] / parts_cpu, 3)
            result[f"hybrid_req_s_over_harmonic_{where}"] = round(
                fused["qps"] / harmonic_sum([rows[p]["qps"] for p in parts]), 3
            )
            result[f"hybrid_p99_over_p50_{where}"] = fused["p99_over_p50"]
            if slow:
                result[f"max_req_s_over_hybrid_{where}"] = round(rows[slow]["qps"] / fused["qps"], 3)
    if slow:
        result["max_p50_over_hybrid_sequential"] = round(sequential[slow]["p50_ms"] / sequential[hybrid]["p50_ms"], 2)
        batch = report["batch"]
        result["max_batch_q_s_over_hybrid"] = round(batch[slow]["q_per_s"] / batch[hybrid]["q_per_s"], 3)
        result["max_index_mb"] = batch[slow]["index_mb"]
    return result


def print_report(report: dict, args, pipelines: list[str]) -> None:
    print(f"\n{args.dataset}, {report['machine']}")
    print(f"{'pipeline':<12}{'CPU ms/q':>10}{'JIT ms/q':>10}{'p50 ms':>9}   (sequential, HTTP)")
    for name in pipelines:
        row = report["sequential"][name]
        print(f"{name:<12}{row['cpu_ms_per_query']:>10.2f}{row['jit_ms_per_query']:>10.2f}{row['p50_ms']:>9.2f}")
    print(f"\n{'pipeline':<12}{'proto':<6}{'clients':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/q':>10}"
          f"{'JIT ms/q':>10}")  # fmt: skip
    for row in report["load"]:
        print(f"{row['pipeline']:<12}{row['protocol']:<6}{row['clients']:>8}{row['qps']:>8.1f}{row['p50_ms']:>9.1f}"
              f"{row['p99_ms']:>9.1f}{row['cpu_ms_per_query']:>10.2f}{row['jit_ms_per_query']:>10.2f}")  # fmt: skip
    if "batch" in report:
        print()
        for name, row in report["batch"].items():
            print(f"{name:<12} batch {row['q_per_s']:.1f} q/s ({row['queries']} queries), indexes {row['index_mb']} MB")
    print("\nratios (this run):")
    for key, value in report["ratios"].items():
        print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
