"""Nothing acknowledged is lost: ``braid serve`` killed with SIGKILL at random moments during a stream of writes.

Two clients write batches of upserts and deletes over HTTP (each batch: a few new documents with a token of their
own, and deletes of earlier ones), recording which batches the server acknowledged. At a random moment the server is
killed with SIGKILL; it is restarted over the same folders, and every batch is checked by searching its documents'
tokens: an acknowledged batch must be wholly there (its upserts found, its deletes gone), an unacknowledged one
(in flight at the kill) wholly there or wholly absent, never half. Repeated ``--kills`` times on one collection.
Usage:

    python -m benchmarks.crash_writes --dataset scifact --pipelines hybrid bm25 --kills 20 --output results/crash.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import secrets
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.service_process import start_server, stop_server


@dataclass
class Batch:
    number: int
    upsert: list[str]
    delete: list[str]
    acknowledged: bool = False


@dataclass
class Report:
    kills: int = 0
    batches: int = 0
    acknowledged: int = 0
    in_flight: int = 0
    lost: list[int] = field(default_factory=list)  # acknowledged batches not (wholly) there after a restart
    half_applied: list[int] = field(default_factory=list)  # unacknowledged batches partly there
    restart_seconds: list[float] = field(default_factory=list)


def token(number: int, position: int) -> str:
    return f"crashtok{number}x{position}"


def writer(address: str, key: str, batches: list[Batch], counter, lock: threading.Lock, stop: threading.Event):
    """Write batches until the server is gone: upserts of new documents, then deletes of acknowledged ones."""
    rng = random.Random(secrets.randbits(32))
    client = httpx.Client(timeout=60, headers={"authorization": f"Bearer {key}"})
    while not stop.is_set():
        with lock:
            batch = Batch(next(counter), [], [])
            batch.upsert = [f"crash-{batch.number}-{i}" for i in range(rng.randint(1, 3))]
            batches.append(batch)  # recorded before it is sent: a kill may leave it unanswered
        documents = [{"id": doc, "text": f"{token(batch.number, i)} under load"} for i, doc in enumerate(batch.upsert)]
        try:
            if client.put(f"{address}/v1/pipelines/bm25/documents", json={"documents": documents}).status_code != 200:
                continue
            batch.acknowledged = True
            with lock:
                # Not one a delete already names (answered or not): each document is deleted by one batch at most,
                # so the check can tell which batch took it.
                claimed = {doc for b in batches for doc in b.delete}
                alive = [doc for b in batches if b.acknowledged for doc in b.upsert if doc not in claimed]
                victims = rng.sample(alive, min(len(alive), rng.randint(0, 2)))
                if not victims:
                    continue
                deletion = Batch(next(counter), [], victims)
                batches.append(deletion)
            gone = client.post(f"{address}/v1/pipelines/bm25/documents/delete", json={"ids": victims})
            deletion.acknowledged = gone.status_code == 200
        except httpx.HTTPError:
            return  # the server is gone


def deleted_ids(batches: list[Batch]) -> set[str]:
    return {doc for batch in batches if batch.acknowledged for doc in batch.delete}


def found(address: str, doc_id: str) -> bool:
    number, position = (int(part) for part in doc_id.split("-")[1:])
    body = {"query": token(number, position), "k": 1, "pipeline": "bm25"}
    hits = httpx.post(f"{address}/v1/search", json=body, timeout=60).json()["hits"]
    return bool(hits) and hits[0]["doc_id"] == doc_id


def check(address: str, batches: list[Batch], report: Report) -> None:
    """Every acknowledged batch wholly applied, every unacknowledged one wholly or not at all (then it counts as
    written from here on: it was applied before the kill, and only its answer was lost)."""
    presence = {doc: found(address, doc) for batch in batches for doc in (*batch.upsert, *batch.delete)}
    # Deletes first: one answered or not, applied or not, decides whether an upsert's document should be there.
    for batch in sorted(batches, key=lambda b: not b.delete):
        if batch.delete:
            applied = [not presence[doc] for doc in batch.delete]
        else:
            later = deleted_ids([b for b in batches if b.number > batch.number])
            applied = [presence[doc] or doc in later for doc in batch.upsert]
        if batch.acknowledged and not all(applied):
            report.lost.append(batch.number)
        elif not batch.acknowledged and any(applied):
            if all(applied):
                batch.acknowledged = True
            else:
                report.half_applied.append(batch.number)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument(
        "--pipelines", nargs="+", default=["bm25"], help="served; must include bm25 (writes and checks go through it)"
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seconds", type=float, nargs=2, default=(0.5, 3.0), help="random time to the kill")
    parser.add_argument("--log", type=Path, default=Path("results/crash_writes.log"))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if "bm25" not in args.pipelines:  # every pipeline sees the writes; bm25 finds a batch's token exactly
        parser.error("--pipelines must include bm25, e.g. --pipelines hybrid bm25")
    report = run(args.dataset, args.index_dir, args.pipelines, args.kills, tuple(args.seconds), args.log)
    print(json.dumps(report.__dict__, indent=1))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report.__dict__, indent=1) + "\n")
    return 0 if not report.lost and not report.half_applied else 1


def run(
    dataset: str, index_dir: str, pipelines: list[str], kills: int, seconds: tuple[float, float], log: Path
) -> Report:

    key = secrets.token_hex(16)
    log.parent.mkdir(parents=True, exist_ok=True)
    serve = ["--dataset", dataset, "--index-dir", index_dir, "--pipelines", *pipelines, "--build-missing"]
    report = Report()
    batches: list[Batch] = []
    counter = itertools.count()
    lock = threading.Lock()
    rng = random.Random(0)
    for _ in range(kills):
        started = time.monotonic()
        process, ready = start_server(serve, key, log)
        report.restart_seconds.append(round(time.monotonic() - started, 2))
        address = ready["http"]
        try:
            check(address, batches, report)  # everything before this restart
        except BaseException:  # a failed check must not leave a server holding the collection's writer lock
            process.kill()
            raise
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(address, key, batches, counter, lock, stop)) for _ in range(2)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(*seconds))
        process.send_signal(signal.SIGKILL)
        process.wait()
        report.kills += 1
        stop.set()
        for thread in threads:
            thread.join(60)
    process, ready = start_server(serve, key, log)
    try:
        check(ready["http"], batches, report)
    finally:
        stop_server(process)
    report.batches = len(batches)
    report.acknowledged = sum(batch.acknowledged for batch in batches)
    report.in_flight = report.batches - report.acknowledged
    return report


if __name__ == "__main__":
    raise SystemExit(main())
