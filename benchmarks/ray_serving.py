"""Serving on Ray Serve against one process, in one run: load, then faults.

Load: ``braid serve`` is started once per setup (one process over the unsharded indexes; one process over N shards
searched in-process; Ray Serve with N shard deployments of R = 1 and of R = 2 replicas) and driven by C concurrent
clients for D seconds per pipeline (``benchmarks.service_load``'s clients). Reported: requests/s, p50/p99, errors,
and requests/s as a share of the one-process setup's.

Faults (``--faults``): under the same load, one replica of shard 0 is killed by its PID (SIGKILL) a quarter into
the run, for R = 2 and for R = 1. Reported: requests sent and failed (by status), the slowest failed request (a
failure must come fast, not at the deadline), the time of the last failure after the kill, and the recovery time
(until Ray Serve has a new replica process of shard 0 running, the killed one gone).

Reload (``--reload``): under the same load, the server is told to reload a quarter into the run: a new generation
of every shard deployment comes up beside the old one, every pipeline switches to it, the old one is deleted.
Reported: requests sent and failed, how long the reload call took, the generations before and after.

Update (``--update PIPELINE``, served beside the loaded pipelines): under the same load, 10 documents are added to
PIPELINE (its indexes must take updates: multivector) a quarter into the run: they are written to their home
shards in one transaction and a new generation serves them. Reported as for a reload, plus how many of the added
documents the new generation ranks first (ties included) for their own text. Usage:

    python -m benchmarks.ray_serving --dataset scifact --index-dir builds/scifact-sharded --shards 3 \\
        --pipelines bm25 hybrid --clients 8 --duration 30 --faults --reload --update multivector \\
        --output results/ray_serving.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil

from benchmarks.service_load import Run
from benchmarks.service_process import start_server, stop_server
from braid.common.dataset_resolver import resolve_dataset
from braid.service.client import BraidClient

RECOVERY_LIMIT_S = 300


def replica_processes(shard: int) -> list[int]:
    """PIDs of the live Ray Serve replica processes of a shard (their process title names the deployment)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = " ".join(process.info["cmdline"] or ())
        # Applications are named per generation (braid-g<N>-shard-<i>): a reload deploys the next one.
        if re.search(rf"ServeReplica:braid-g\d+-shard-{shard}:", command) and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process.info["pid"])
    return sorted(found)


def load(addresses: dict, pipeline: str, queries: list[str], args, fault=None) -> tuple[dict, Run]:
    with BraidClient(addresses["grpc"]) as warm:  # first-query costs (JIT, model load) out of the run
        for query in queries[:5]:
            # After a fault run the replacement replica may still be loading: wait until the service answers.
            until = time.monotonic() + RECOVERY_LIMIT_S
            while True:
                try:
                    warm.search(query, pipeline=pipeline)
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > until:
                        raise
                    time.sleep(0.5)
    run = Run(addresses, pipeline, args.protocol, queries, args)
    return run.execute(fault), run


def kill_replica(addresses: dict, replicas: int, report: dict):
    """A reload_action for :class:`Run`: SIGKILL shard 0's first replica, then watch for its replacement."""

    def action() -> dict:
        victim = addresses["shard_replicas"]["0"][0]
        report["victim_pid"] = victim
        report["event_at"] = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def watch() -> None:
            while time.monotonic() - report["event_at"] < RECOVERY_LIMIT_S:
                live = [pid for pid in replica_processes(0) if pid != victim]
                if len(live) >= replicas:
                    report["recovery_s"] = round(time.monotonic() - report["event_at"], 2)
                    report["replacement_pids"] = live
                    return
                time.sleep(0.1)

        threading.Thread(target=watch, daemon=True).start()
        return {"killed_pid": victim}

    return action


def change_under_load(addresses: dict, api_key: str, pipeline: str, report: dict, change):
    """A reload_action for :class:`Run`: ``change(admin)`` (a reload, a document update: each brings a new generation)
    while clients search; ``change`` returns the generation it brought and anything more to report."""

    def action() -> dict:
        with BraidClient(addresses["grpc"], api_key=api_key, timeout=600) as admin:
            before = {p.name: p.generation for p in admin.list_pipelines().pipelines}[pipeline]
            report["event_at"] = tick = time.monotonic()  # fault_summary counts from here
            after, more = change(admin)
        report.update(reload_s=round(time.monotonic() - tick, 2), generation_before=before, generation_after=after)
        report.update(more)
        return {key: report[key] for key in ("reload_s", "generation_before", "generation_after", *more)}

    return action


def reload_shards(addresses: dict, api_key: str, pipeline: str, report: dict):
    """Reload (a new generation of every shard deployment) while clients search."""

    def change(admin: BraidClient) -> tuple[int, dict]:
        return {p.name: p.generation for p in admin.reload(pipeline).pipelines}[pipeline], {}

    return change_under_load(addresses, api_key, pipeline, report, change)


def add_under_load(addresses: dict, api_key: str, pipeline: str, documents: list, report: dict):
    """Add documents to ``pipeline`` (written to every shard, all or none, then served by a new generation) while
    clients search."""

    def change(admin: BraidClient) -> tuple[int, dict]:
        answer = admin.add_documents(pipeline, documents)
        return answer.generation, {"doc_count": answer.doc_count}

    return change_under_load(addresses, api_key, pipeline, report, change)


def top_ties(client: BraidClient, text: str, pipeline: str) -> set[str]:
    """The ids ranked first for ``text``, ties included: an earlier run may have added a document with the same text,
    which scores exactly the same."""
    hits = client.search(text, 10, pipeline).hits
    return {hit.doc_id for hit in hits if abs(hit.score - hits[0].score) <= 1e-5}


def change_summary(run: Run, report: dict, row: dict, name: str) -> dict:
    """What a reload or an update under load reports: requests and failures, how long it took, the generations."""
    summary = fault_summary(run, report)
    return {
        **{key: summary[key] for key in ("requests", "failed", "failed_by_status", "slowest_failure_ms")},
        f"after_{name}_started": summary["after_event"],
        **{key: report[key] for key in ("reload_s", "generation_before", "generation_after")},
        "qps": row["qps"],
        "p99_ms": row["p99_ms"],
    }


def fault_summary(run: Run, report: dict) -> dict:
    event = report["event_at"]
    failed = [(when, seconds, error) for when, seconds, error in run.events if error is not None]
    return {
        "requests": len(run.events),
        "after_event": sum(when >= event for when, _, _ in run.events),
        "failed": len(failed),
        "failed_by_status": {error: sum(e == error for _, _, e in failed) for error in {e for _, _, e in failed}},
        "slowest_failure_ms": round(max((s for _, s, _ in failed), default=0.0) * 1000, 1),
        "last_failure_after_event_s": round(max((w for w, _, _ in failed), default=event) - event, 2),
        "recovery_s": report.get("recovery_s"),
        "victim_pid": report.get("victim_pid"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="scifact")
    parser.add_argument("--data-dir", help="datasets folder (default: $BRAID_DATA_DIR, else ./data)")
    parser.add_argument("--index-dir", default="builds/scifact-sharded")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--pipelines", nargs="+", default=["bm25", "hybrid"])
    parser.add_argument("--protocol", default="grpc", choices=["grpc", "http"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per load run")
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--timeout", type=float, default=10.0, help="client deadline per request, seconds")
    parser.add_argument("--faults", action="store_true", help="also kill a replica under load (R = 2, then R = 1)")
    parser.add_argument("--reload", action="store_true", help="also reload every shard under load (Ray setups)")
    parser.add_argument(
        "--update", metavar="PIPELINE", help="also add 10 documents to PIPELINE under load (Ray setups; served too)"
    )
    parser.add_argument("--setups", nargs="+", default=["process", "process-shards", "ray-r1", "ray-r2"])
    parser.add_argument("--output", type=Path, default=Path("results/ray_serving.json"))
    args = parser.parse_args()

    dataset = resolve_dataset(args.dataset, args.data_dir)
    queries = list(dataset.queries().values())
    served = [*args.pipelines, *([args.update] if args.update and args.update not in args.pipelines else [])]
    base = ["--dataset", args.dataset, "--index-dir", args.index_dir, "--pipelines", *served,
            "--timeout", str(args.timeout), *(["--data-dir", args.data_dir] if args.data_dir else [])]  # fmt: skip
    setups = {
        "process": [],
        "process-shards": ["--shards", str(args.shards)],
        "ray-r1": ["--shards", str(args.shards), "--ray", "local", "--replicas", "1"],
        "ray-r2": ["--shards", str(args.shards), "--ray", "local", "--replicas", "2"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    rows, faults, reloads, updates = [], [], [], []
    for setup in args.setups:
        api_key = secrets.token_hex(16)
        log = args.output.with_name(f"{args.output.stem}.{setup}.server.log")
        started = time.monotonic()
        process, addresses = start_server(base + setups[setup], api_key, log)
        start_s = round(time.monotonic() - started, 1)
        try:
            for pipeline in args.pipelines:
                row, _ = load(addresses, pipeline, queries, args)
                row.update(setup=setup, start_s=start_s)
                rows.append(row)
                print(json.dumps(row), flush=True)
            if args.faults and setup.startswith("ray"):
                replicas = int(setups[setup][-1])
                report: dict = {}
                row, run = load(addresses, args.pipelines[-1], queries, args, kill_replica(addresses, replicas, report))
                deadline = time.monotonic() + RECOVERY_LIMIT_S
                while "recovery_s" not in report and time.monotonic() < deadline:
                    time.sleep(0.5)
                summary = fault_summary(run, report)
                fault = {"setup": setup, "replicas": replicas, "pipeline": args.pipelines[-1], **summary}
                faults.append(fault)
                print(json.dumps(fault), flush=True)
            if args.reload and setup.startswith("ray"):
                report = {}
                pipeline = args.pipelines[-1]
                row, run = load(addresses, pipeline, queries, args, reload_shards(addresses, api_key, pipeline, report))
                reloaded = {"setup": setup, "pipeline": pipeline, **change_summary(run, report, row, "reload")}
                reloads.append(reloaded)
                print(json.dumps(reloaded), flush=True)
            if args.update and setup.startswith("ray"):
                report = {}
                # Query texts as new documents, under ids no earlier run used (a run's additions stay in the index).
                run_id = secrets.token_hex(3)
                documents = [(f"bench-{setup}-{run_id}-{n}", text) for n, text in enumerate(queries[-10:])]
                action = add_under_load(addresses, api_key, args.update, documents, report)
                row, run = load(addresses, args.pipelines[-1], queries, args, action)
                with BraidClient(addresses["grpc"]) as client:
                    found = sum(doc_id in top_ties(client, text, args.update) for doc_id, text in documents)
                updated = {
                    "setup": setup,
                    "pipeline": args.update,
                    "load_pipeline": args.pipelines[-1],
                    **change_summary(run, report, row, "update"),
                    "doc_count": report["doc_count"],
                    "added": len(documents),
                    "added_found_first": found,
                }
                updates.append(updated)
                print(json.dumps(updated), flush=True)
        finally:
            exit_code = stop_server(process)
            if exit_code != 0:
                print(f"{setup}: braid serve exited with {exit_code}", file=sys.stderr)
    first = {row["pipeline"]: row for row in rows if row["setup"] == args.setups[0]}
    print(f"\n{args.dataset}, {args.clients} {args.protocol} clients, {args.duration:g} s a run, {args.shards} shards")
    print(f"{'setup':<16}{'pipeline':<10}{'q/s':>8}{'share':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'start s':>9}")
    for row in rows:
        reference = first.get(row["pipeline"])
        row["qps_vs_process"] = round(row["qps"] / reference["qps"], 3) if reference and reference["qps"] else None
        print(
            f"{row['setup']:<16}{row['pipeline']:<10}{row['qps']:>8}{row['qps_vs_process'] or '-':>8}"
            f"{row['p50_ms']:>9}{row['p99_ms']:>9}{row['errors']:>8}{row['start_s']:>9}"
        )
    for fault in faults:
        print(
            f"fault {fault['setup']}: {fault['requests']} requests ({fault['after_event']} after the kill), "
            f"{fault['failed']} failed {fault['failed_by_status']}, slowest failure {fault['slowest_failure_ms']} ms, "
            f"last failure {fault['last_failure_after_event_s']} s after the kill, recovered in {fault['recovery_s']} s"
        )
    for reloaded in reloads:
        print(
            f"reload {reloaded['setup']}: {reloaded['requests']} requests ({reloaded['after_reload_started']} after it "
            f"began), {reloaded['failed']} failed {reloaded['failed_by_status']}, generation "
            f"{reloaded['generation_before']} -> {reloaded['generation_after']} in {reloaded['reload_s']} s"
        )
    for updated in updates:
        print(
            f"update {updated['setup']}: {updated['requests']} requests ({updated['after_update_started']} after it "
            f"began), {updated['failed']} failed {updated['failed_by_status']}, generation "
            f"{updated['generation_before']} -> {updated['generation_after']} in {updated['reload_s']} s, "
            f"{updated['added_found_first']} of {updated['added']} added documents found first"
        )
    report = {"runs": rows, "faults": faults, "reloads": reloads, "updates": updates, "args": vars(args)}
    args.output.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
