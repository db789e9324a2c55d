"""Index build jobs: a collection split into shards, each shard encoded once and checkpointed, shards assembled
into the final indexes, all resumable after any interruption (SIGKILL included) and runnable on Ray.

Stages, each idempotent, so running the same job again continues where it stopped:

1. **Split**: the corpus is cut, in order, into ``shard_size``-document JSONL files under the job folder
   (``OUTPUT/.jobs/<dataset>-<digest>/collection``), written atomically, recorded with their checksums in
   ``job.json``.
2. **Encode**: for every sharded index kind (an :class:`~braid.indexer.index_kind.IndexKind` with ``shards``: the
   kinds that run a model or an analyzer per document) each shard is encoded into its own folder, written
   atomically with a ``shard.json`` that records what it was made from; a shard whose record matches is never
   encoded again. Shards run in this process or as Ray tasks (``--ray``), with the same code and the same output.
3. **Assemble**: each kind's shards are merged into the final index at ``OUTPUT/<dataset>/<kind>-<digest>`` (the
   layout ``braid eval --index-dir OUTPUT`` finds), atomically, with a manifest recording the inputs, parameters,
   shard checksums, file checksums, timings and library versions.
4. **Derived** kinds (binary codes, pooled multi-vector indexes) are built from the assembled indexes they require.
5. **Partition** (``shards = N``, N > 1): every kind is also written as N serving shards under
   ``OUTPUT/shard-<i>-of-<N>`` (:mod:`braid.indexer.serving_shards`): encoded shard j is assembled into serving
   shard j mod N, derived kinds reuse the binarizer and centroids trained on the whole collection in step 4.

This is the map-then-merge structure of Anserini's and Vespa's feeding pipelines: the expensive, embarrassingly
parallel part (encoding) is sharded; the cheap global parts (inverted-file construction, centroid training) run
once over the merged shards.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from braid.common.atomic_file import atomic_write_text
from braid.common.beir_format import read_corpus
from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.peak_memory import PeakMemory
from braid.indexer.atomic_dir import atomic_directory
from braid.indexer.build_config import BuildConfig, IndexRequest
from braid.indexer.index_kind import Shards
from braid.indexer.index_store import build_index, index_identity, index_path
from braid.indexer.kinds import INDEX_KINDS
from braid.indexer.manifest import MANIFEST_NAME, Manifest, file_checksums, file_sha256
from braid.indexer.serving_shards import RECORD, shard_root

JOB_FILE = "job.json"
SHARD_RECORD = "shard.json"
VERSIONED = ("braid", "torch", "transformers", "sentence-transformers", "pyserini", "faiss-cpu", "numpy", "ray")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _write_json_atomic(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def _kind_digest(kind: str, params: dict) -> str:
    return hashlib.sha256(json.dumps(index_identity(kind, params), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class ShardTask:
    """Encode one shard of the collection for one index kind into ``out_dir`` (a picklable Ray task payload)."""

    kind: str
    params: dict
    shard_file: str
    shard_sha256: str
    out_dir: str
    threads: int | None = None


def shard_is_done(task: ShardTask) -> bool:
    record = Path(task.out_dir) / SHARD_RECORD
    if not record.is_file():
        return False
    try:
        done = json.loads(record.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return (done.get("kind"), done.get("params"), done.get("shard_sha256")) == (
        task.kind,
        task.params,
        task.shard_sha256,
    )


def _shards(kind: str) -> Shards:
    shards = INDEX_KINDS[kind].shards
    if shards is None:
        raise BraidError(f"{kind} indexes cannot be built in shards")
    return shards


def run_shard_task(task: ShardTask) -> dict:
    """Encode one shard (atomically: a killed task leaves no folder at ``out_dir``); returns its record."""
    if task.threads:
        import torch

        torch.set_num_threads(task.threads)
    out_dir = Path(task.out_dir)
    if shard_is_done(task):
        return json.loads((out_dir / SHARD_RECORD).read_text(encoding="utf-8"))
    sharded = _shards(task.kind)
    started = time.perf_counter()
    with atomic_directory(out_dir, overwrite=True) as scratch:
        # The record carries the encoding's peak RSS (the worker process's, its models included).
        with PeakMemory() as peak:
            documents = list(read_corpus(Path(task.shard_file)))
            count = sharded.encode(documents, scratch, task.params)
        record = {
            "peak_rss_bytes": peak.bytes,
            "kind": task.kind,
            "params": task.params,
            "shard_file": Path(task.shard_file).name,
            "shard_sha256": task.shard_sha256,
            "documents": len(documents),
            "encoded": count,
            "seconds": round(time.perf_counter() - started, 3),
            "host": os.uname().nodename,
            "pid": os.getpid(),
            "files": file_checksums(scratch),
        }
        (scratch / SHARD_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


@dataclass
class KindReport:
    kind: str
    params: dict
    path: str = ""
    documents: int = 0
    shards: int = 0
    shards_reused: int = 0
    encode_seconds: float = 0.0
    assemble_seconds: float = 0.0
    wall_seconds: float = 0.0
    status: str = ""
    peak_rss_bytes: int | None = None  # the highest peak RSS of its shard tasks and its assembly

    @property
    def docs_per_second(self) -> float | None:
        """Per worker: documents over the summed encode time of the shards encoded in this run."""
        return None if not self.encode_seconds else round(self.documents / self.encode_seconds, 2)

    @property
    def build_docs_per_second(self) -> float | None:
        """Encoding and assembly together (Lucene indexing happens in assembly), as one worker would see it."""
        seconds = self.encode_seconds + self.assemble_seconds
        return None if not seconds or not self.documents else round(self.documents / seconds, 2)


@dataclass
class BuildJob:
    """One run of a :class:`BuildConfig` over a dataset (see the module docstring)."""

    config: BuildConfig
    dataset: Dataset
    threads: int | None = None
    force: bool = False
    runner: Callable[[list[ShardTask], str], list[dict]] | None = None  # None: in this process
    reports: list[KindReport] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.config.output)

    @property
    def job_dir(self) -> Path:
        checksum = self.dataset.corpus_checksum()
        key = hashlib.sha256(f"{checksum}:{self.config.shard_size}".encode()).hexdigest()[:12]
        return self.root / ".jobs" / f"{self.dataset.name}-{key}"

    # -- checks before anything is written --------------------------------------------------------------------

    def check_output(self) -> None:
        root = self.root
        if (root / MANIFEST_NAME).is_file():
            raise BraidError(f"output {root} is an index itself, not a folder of indexes; choose another output")
        if root.exists() and not root.is_dir():
            raise BraidError(f"output {root} exists and is not a folder")
        if root.is_dir() and any(root.iterdir()):
            known = (root / ".jobs").is_dir() or any(
                (kind_dir / MANIFEST_NAME).is_file() for kind_dir in root.glob("*/*") if kind_dir.is_dir()
            )
            if not known:
                raise BraidError(f"output {root} is not empty and holds no braid indexes; choose an empty folder")
        for request in self.config.indexes:
            final = index_path(self.dataset, request.kind, request.params, root)
            if (final / MANIFEST_NAME).is_file() and not self.force:
                manifest = Manifest.read(final)
                if not manifest.matches(request.kind, request.params, self.dataset.corpus_checksum()):
                    raise BraidError(
                        f"{final} holds a different index ({manifest.kind}, {manifest.doc_count} documents, corpus "
                        f"{manifest.corpus_checksum[:16]}); nothing was overwritten: pass --force to replace it"
                    )

    # -- stages -----------------------------------------------------------------------------------------------

    def split(self) -> list[dict]:
        """Shard files of the collection (written once; reused while the corpus is unchanged)."""
        job_file = self.job_dir / JOB_FILE
        checksum = self.dataset.corpus_checksum()
        if job_file.is_file():
            job = json.loads(job_file.read_text(encoding="utf-8"))
            if job.get("corpus_checksum") != checksum or job.get("shard_size") != self.config.shard_size:
                raise BraidError(f"{job_file} records another collection or shard size; remove {self.job_dir}")
            shards = job["shards"]
            if all(file_sha256(self.job_dir / "collection" / s["file"]) == s["sha256"] for s in shards):
                return shards
        self.job_dir.mkdir(parents=True, exist_ok=True)
        shards = []
        with atomic_directory(self.job_dir / "collection", overwrite=True) as scratch:
            handle = None
            documents = self.dataset.iter_corpus()
            for seen, document in enumerate(tqdm(documents, desc="split", unit="doc", file=sys.stderr)):
                if seen % self.config.shard_size == 0:
                    if handle is not None:
                        handle.close()
                    name = f"shard-{len(shards):05d}.jsonl"
                    shards.append({"file": name, "documents": 0, "first_id": document.doc_id})
                    handle = (scratch / name).open("w", encoding="utf-8")
                row = {"_id": document.doc_id, "title": document.title, "text": document.text}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                shards[-1]["documents"] += 1
            if handle is not None:
                handle.close()
            if not shards:
                raise BraidError(f"dataset {self.dataset.name!r} has no documents to index")
            for shard in shards:
                shard["sha256"] = file_sha256(scratch / shard["file"])
        job = {
            "dataset": self.dataset.name,
            "dataset_root": str(self.dataset.root),
            "corpus_checksum": checksum,
            "shard_size": self.config.shard_size,
            "documents": sum(s["documents"] for s in shards),
            "shards": shards,
            "braid_version": library_versions().get("braid", "unknown"),
        }
        _write_json_atomic(job_file, job)
        return shards

    def leaf_requests(self) -> list[IndexRequest]:
        """The sharded kinds to encode: those asked for, and those a derived kind is built from."""
        leaves: list[IndexRequest] = []
        for request in self.config.indexes:
            spec = INDEX_KINDS[request.kind]
            wanted = [request] if spec.shards else []
            if spec.requires:
                wanted += [
                    IndexRequest(k, INDEX_KINDS[k].validate(p)) for k, p in spec.requires(request.params).values()
                ]
            for item in wanted:
                if not INDEX_KINDS[item.kind].shards:
                    raise BraidError(f"{item.kind} indexes cannot be built in shards yet")
                if item not in leaves:
                    leaves.append(item)
        return leaves

    def tasks(self, request: IndexRequest, shards: list[dict]) -> list[ShardTask]:
        folder = self.job_dir / "shards" / f"{request.kind}-{_kind_digest(request.kind, request.params)}"
        return [
            ShardTask(
                request.kind,
                request.params,
                str(self.job_dir / "collection" / shard["file"]),
                shard["sha256"],
                str(folder / f"{number:05d}"),
                self.threads,
            )
            for number, shard in enumerate(shards)
        ]

    def encode(self, request: IndexRequest, shards: list[dict], report: KindReport) -> list[dict]:
        tasks = self.tasks(request, shards)
        todo = [task for task in tasks if not shard_is_done(task)]
        report.shards, report.shards_reused = len(tasks), len(tasks) - len(todo)
        if todo:
            if self.runner is None:
                records = []
                bar = tqdm(todo, desc=f"encode {request.kind}", unit="shard", file=sys.stderr)
                for task in bar:
                    records.append(run_shard_task(task))
                    seconds = sum(r["seconds"] for r in records)
                    bar.set_postfix(docs_per_s=f"{sum(r['documents'] for r in records) / max(seconds, 1e-9):.1f}")
            else:
                records = self.runner(todo, request.kind)
            report.encode_seconds = round(sum(r["seconds"] for r in records), 3)
            report.documents = sum(r["documents"] for r in records)
        return [json.loads((Path(task.out_dir) / SHARD_RECORD).read_text(encoding="utf-8")) for task in tasks]

    def assemble(self, request: IndexRequest, records: list[dict], report: KindReport) -> Path:
        final = index_path(self.dataset, request.kind, request.params, self.root)
        checksum = self.dataset.corpus_checksum()
        if not self.force and (final / MANIFEST_NAME).is_file():
            manifest = Manifest.read(final)
            if manifest.matches(request.kind, request.params, checksum) and manifest.build.get("shards") == [
                r["shard_sha256"] for r in records
            ]:
                report.status = "up to date"
                return final
        started = time.perf_counter()
        tasks = self.tasks(request, [{"file": r["shard_file"], "sha256": r["shard_sha256"]} for r in records])
        with atomic_directory(final, overwrite=True) as scratch:
            with PeakMemory() as peak:
                count = _shards(request.kind).assemble(
                    [Path(t.out_dir) for t in tasks], scratch, request.params, self.threads
                )
            encode_peak = max((r.get("peak_rss_bytes") or 0 for r in records), default=0)
            report.peak_rss_bytes = max(encode_peak, peak.bytes)
            assemble_seconds = time.perf_counter() - started
            manifest = Manifest(
                kind=request.kind,
                params=request.params,
                dataset=self.dataset.name,
                doc_count=count,
                corpus_checksum=checksum,
                build_seconds=round(sum(r["seconds"] for r in records) + assemble_seconds, 3),
                build={
                    "job": os.path.relpath(self.job_dir.resolve(), final.resolve()),
                    "shard_size": self.config.shard_size,
                    "shards": [r["shard_sha256"] for r in records],
                    "shard_files": {r["shard_file"]: r["files"] for r in records},
                    "encode_seconds": round(sum(r["seconds"] for r in records), 3),
                    "assemble_seconds": round(assemble_seconds, 3),
                    # The highest of the shard tasks' peaks (each its worker's) and the assembly's (this process's).
                    "peak_rss_bytes": report.peak_rss_bytes,
                    "encode_peak_rss_bytes": encode_peak,
                    "assemble_peak_rss_bytes": peak.bytes,
                    "versions": library_versions(),
                    "config": self.config.source,
                },
            )
            manifest.write(scratch)
        report.assemble_seconds = round(time.perf_counter() - started, 3)
        report.status = "built"
        return final

    def run(self) -> list[KindReport]:
        self.check_output()
        shards = self.split()
        self.check_partition(shards)
        for request in self.leaf_requests():
            report = KindReport(request.kind, request.params)
            tick = time.perf_counter()
            records = self.encode(request, shards, report)
            report.path = str(self.assemble(request, records, report))
            report.wall_seconds = round(time.perf_counter() - tick, 3)
            self.reports.append(report)
        for request in self.config.indexes:
            if INDEX_KINDS[request.kind].shards:
                continue
            report = KindReport(request.kind, request.params)
            tick = time.perf_counter()
            path, manifest, built = build_index(
                self.dataset, request.kind, request.params, index_root=self.root, threads=self.threads, force=self.force
            )
            report.path, report.documents = str(path), manifest.doc_count if built else 0
            report.peak_rss_bytes = manifest.build.get("peak_rss_bytes") if built else None
            report.status = "built" if built else "up to date"
            report.wall_seconds = round(time.perf_counter() - tick, 3)
            self.reports.append(report)
        if self.config.shards > 1:
            self.partition(shards)
        _write_json_atomic(
            self.job_dir / "report.json",
            [
                {**r.__dict__, "docs_per_second": r.docs_per_second, "build_docs_per_second": r.build_docs_per_second}
                for r in self.reports
            ],
        )
        return self.reports

    def check_partition(self, chunks: list[dict]) -> None:
        """Every serving shard needs at least one encoded shard: refused before anything is encoded."""
        count = self.config.shards
        if len(chunks) < count:
            raise BraidError(
                f"shards = {count} needs at least {count} encoded shards, but {self.dataset.name} makes "
                f"{len(chunks)} of shard_size = {self.config.shard_size}: lower shard_size"
            )

    def partition(self, chunks: list[dict]) -> None:
        """Write every requested kind (and what it is built from) as ``shards`` serving shards (module docstring)."""
        count = self.config.shards
        leaves = self.leaf_requests()
        derived = [request for request in self.config.indexes if not INDEX_KINDS[request.kind].shards]
        for index in range(count):
            members = list(range(index, len(chunks), count))
            root = shard_root(self.root, index, count)
            record = {"index": index, "of": count, "encoded_shards": [chunks[j]["sha256"] for j in members]}
            for request in leaves:
                tasks = self.tasks(request, chunks)
                folders = [Path(tasks[j].out_dir) for j in members]
                assemble = _shards(request.kind).assemble
                self._write_shard(
                    request, root, record, partial(assemble, folders, params=request.params, threads=self.threads)
                )
            for request in derived:
                spec = INDEX_KINDS[request.kind]
                inputs = {
                    role: index_path(self.dataset, kind, INDEX_KINDS[kind].validate(params), root)
                    for role, (kind, params) in spec.requires(request.params).items()
                }
                trained = index_path(self.dataset, request.kind, request.params, self.root)
                derive = partial(
                    spec.build, self.dataset, params=request.params, threads=self.threads, trained=trained, **inputs
                )
                self._write_shard(request, root, record, derive, inputs)

    def _write_shard(
        self,
        request: IndexRequest,
        root: Path,
        record: dict,
        build: Callable[[Path], int],
        inputs: dict[str, Path] | None = None,
    ) -> None:
        final = index_path(self.dataset, request.kind, request.params, root)
        checksum = self.dataset.corpus_checksum()
        if not self.force and (final / MANIFEST_NAME).is_file():
            manifest = Manifest.read(final)
            if manifest.matches(request.kind, request.params, checksum) and manifest.build.get(RECORD) == record:
                return
        started = time.perf_counter()
        with atomic_directory(final, overwrite=True) as scratch:
            documents = build(out_dir=scratch)
            Manifest(
                kind=request.kind,
                params=request.params,
                dataset=self.dataset.name,
                doc_count=documents,
                # The collection's checksum, not the partition's: shard i's index is found the way the unsharded
                # one is, and its manifest's serving_shard record says which part of the collection it holds.
                corpus_checksum=checksum,
                build_seconds=round(time.perf_counter() - started, 3),
                depends_on={
                    role: os.path.relpath(path.resolve(), final.resolve()) for role, path in (inputs or {}).items()
                },
                build={RECORD: record, "job": os.path.relpath(self.job_dir.resolve(), final.resolve())},
            ).write(scratch)
        self.reports.append(
            KindReport(
                request.kind,
                request.params,
                path=str(final),
                documents=documents,
                assemble_seconds=round(time.perf_counter() - started, 3),
                wall_seconds=round(time.perf_counter() - started, 3),
                status=f"shard {record['index']} of {record['of']}",
            )
        )
