"""Load test of a running ``braid serve`` on loopback: N concurrent clients for D seconds per pipeline and
protocol, with an index rebuilt and hot-reloaded in the middle of each run.

Each client has its own connection (a gRPC channel or an HTTP keep-alive client) and sends the dataset's queries
round robin, one at a time, as fast as answers come back. Reported per run: requests, queries/s, p50 and p99
latency seen by the client, and errors by status. The run stops by itself (``--duration`` seconds or
``--max-requests`` per run). With ``--reload``, the first pipeline's BM25 index is rebuilt in place
(``braid index build --force``) while traffic flows and the server is told to reload; the run counts any request
that failed around it. Usage:

    python -m benchmarks.service_load --dataset scifact --pipelines bm25 hybrid --clients 8 --duration 60 \\
        --reload --output results/service_load.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import httpx

from benchmarks.service_process import REPO, start_server, stop_server
from braid.common.dataset_resolver import resolve_dataset
from braid.service.client import BraidClient


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Run:
    """One (pipeline, protocol) load run."""

    def __init__(self, addresses: dict, pipeline: str, protocol: str, queries: list[str], args) -> None:
        self.addresses, self.pipeline, self.protocol = addresses, pipeline, protocol
        self.queries, self.args = queries, args
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.events: list[tuple[float, float, str | None]] = []  # (when answered, seconds taken, error)
        self.lock = threading.Lock()
        self.sent = itertools.count()
        self.stop = threading.Event()

    def _record(self, seconds: float, error: str | None) -> None:
        with self.lock:
            self.events.append((time.monotonic(), seconds, error))
            if error is None:
                self.latencies.append(seconds)
            else:
                self.errors[error] += 1

    def _next(self) -> str | None:
        n = next(self.sent)
        if self.stop.is_set() or n >= self.args.max_requests:
            self.stop.set()
            return None
        return self.queries[n % len(self.queries)]

    def grpc_client(self) -> None:
        with BraidClient(self.addresses["grpc"], timeout=self.args.timeout) as client:
            while (query := self._next()) is not None:
                tick = time.perf_counter()
                try:
                    client.search(query, k=10, pipeline=self.pipeline)
                    self._record(time.perf_counter() - tick, None)
                except grpc.RpcError as error:
                    self._record(time.perf_counter() - tick, error.code().name)

    def http_client(self) -> None:
        url = f"{self.addresses['http']}/v1/search"
        with httpx.Client(timeout=self.args.timeout) as client:
            while (query := self._next()) is not None:
                tick = time.perf_counter()
                try:
                    response = client.post(url, json={"query": query, "k": 10, "pipeline": self.pipeline})
                    if response.status_code == 200:
                        self._record(time.perf_counter() - tick, None)
                    else:
                        self._record(time.perf_counter() - tick, f"HTTP {response.status_code}")
                except httpx.HTTPError as error:
                    self._record(time.perf_counter() - tick, type(error).__name__)

    def execute(self, reload_action=None) -> dict:
        target = self.grpc_client if self.protocol == "grpc" else self.http_client
        threads = [threading.Thread(target=target) for _ in range(self.args.clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        reload_report = None
        if reload_action is not None:
            time.sleep(self.args.duration / 4)
            reload_report = reload_action()
        remaining = self.args.duration - (time.perf_counter() - started)
        self.stop.wait(max(0.0, remaining))
        self.stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        ms = [value * 1000 for value in self.latencies]
        return {
            "pipeline": self.pipeline,
            "protocol": self.protocol,
            "clients": self.args.clients,
            "seconds": round(elapsed, 1),
            "requests": len(ms) + sum(self.errors.values()),
            "qps": round(len(ms) / elapsed, 1),
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(percentile(ms, 0.99), 1) if ms else None,
            "errors": sum(self.errors.values()),
            "errors_by_status": dict(self.errors),
            "reload": reload_report,
        }


def rebuild_and_reload(args, addresses: dict, api_key: str, pipeline: str):
    def action() -> dict:
        tick = time.perf_counter()
        build = subprocess.run(
            [sys.executable, "-m", "braid", "index", "build", "--dataset", args.dataset, "--kind", "bm25",
             "--index-dir", args.index_dir, "--force", *(["--data-dir", args.data_dir] if args.data_dir else [])],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        if build.returncode != 0:
            raise SystemExit(f"rebuild failed: {build.stderr[-2000:]}")
        rebuilt = time.perf_counter() - tick
        with BraidClient(addresses["grpc"], api_key=api_key, timeout=120) as admin:
            before = {p.name: p.generation for p in admin.list_pipelines().pipelines}[pipeline]
            after = {p.name: p.generation for p in admin.reload(pipeline).pipelines}[pipeline]
        return {"rebuild_s": round(rebuilt, 1), "generation_before": before, "generation_after": after}

    return action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--pipelines", nargs="+", default=["bm25", "hybrid"])
    parser.add_argument("--protocols", nargs="+", default=["grpc", "http"], choices=["grpc", "http"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--max-requests", type=int, default=200_000, help="per run, at most")
    parser.add_argument("--timeout", type=float, default=30.0, help="client deadline per request, seconds")
    parser.add_argument("--reload", action="store_true", help="rebuild the BM25 index and reload during each run")
    parser.add_argument("--data-dir", help="datasets folder (default: $BRAID_DATA_DIR, else ./data)")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--serve-args", default="", help="extra braid serve arguments, one string")
    parser.add_argument("--output", type=Path, default=Path("results/service_load.json"))
    args = parser.parse_args()

    dataset = resolve_dataset(args.dataset, args.data_dir)
    queries = list(dataset.queries().values())
    api_key = secrets.token_hex(16)
    log = args.output.with_suffix(".server.log")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    serve = ["--dataset", args.dataset, "--index-dir", args.index_dir, "--pipelines", *args.pipelines,
             *(["--data-dir", args.data_dir] if args.data_dir else []), *args.serve_args.split()]  # fmt: skip
    process, addresses = start_server(serve, api_key, log)
    rows = []
    try:
        for pipeline in args.pipelines:
            with BraidClient(addresses["grpc"]) as warm:  # first-query costs (JVM JIT, model load) out of the run
                for query in queries[:5]:
                    warm.search(query, pipeline=pipeline)
            for protocol in args.protocols:
                run = Run(addresses, pipeline, protocol, queries, args)
                action = rebuild_and_reload(args, addresses, api_key, pipeline) if args.reload else None
                row = run.execute(action)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        exit_code = stop_server(process)
    columns = ("pipeline", "proto", "clients", "requests", "q/s", "p50 ms", "p99 ms", "errors")
    print(f"{columns[0]:<10} {columns[1]:<5} " + " ".join(f"{c:>8}" for c in columns[2:]) + "  reload")
    for row in rows:
        reload = row["reload"]
        reload_text = f"gen {reload['generation_before']}->{reload['generation_after']}" if reload else "-"
        print(
            f"{row['pipeline']:<10} {row['protocol']:<5} {row['clients']:>8} {row['requests']:>8} {row['qps']:>8} "
            f"{row['p50_ms']:>8} {row['p99_ms']:>8} {row['errors']:>8}  {reload_text}"
        )
    # Each pipeline's requests/s as a share of the first pipeline's over the same protocol, in this one run.
    first = {row["protocol"]: row for row in rows if row["pipeline"] == args.pipelines[0]}
    for row in rows:
        base = first.get(row["protocol"])
        if row["pipeline"] != args.pipelines[0] and base and base["qps"]:
            row["qps_vs_first_pipeline"] = round(row["qps"] / base["qps"], 3)
            print(
                f"{row['protocol']}: {row['pipeline']} at {row['qps_vs_first_pipeline']:.3f} of {base['pipeline']}'s "
                f"requests/s; p99 {row['p99_ms']} ms vs {base['p99_ms']} ms"
            )
    print(f"server exit code after SIGTERM: {exit_code}")
    args.output.write_text(json.dumps({"runs": rows, "server_exit_code": exit_code, "args": vars(args)}, indent=2,
                                      default=str))  # fmt: skip
    if exit_code != 0 or any(row["errors"] for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
