"""A collection that takes writes while it is searched: upserts and deletes on every index kind, durable and
visible at once, without rebuilding or reopening the indexes a write did not add to.

The design is Elasticsearch's (a translog, a refresh, a merge) over braid's own indexes:

- **Durable.** A write batch is appended to the collection's write-ahead log and synced to disk before it is
  acknowledged (:mod:`braid.indexer.write_log`); the log is the truth, and everything below is rebuilt from it
  after a crash.
- **All or nothing.** Before the log append, the batch is indexed as one small segment per index kind the open
  pipelines use (:mod:`braid.indexer.segment_build`); a failure there (an encoder error, a full disk) discards
  those segments and the log never hears of the batch. The append is the commit point.
- **Visible at once.** After the append, every open retriever of the collection gets the new segment and the
  ids the batch replaced or deleted as exclusions of the segments that held them, in one reference swap per
  retriever (:class:`~braid.retriever.segmented_retriever.SegmentedRetriever`). No index is reopened: a write
  costs encoding its documents and indexing them alone, whatever the collection's size. A small write's BM25 and
  SPLADE parts stay in memory (:mod:`braid.retriever.memory_segment`, scored with Lucene's arithmetic): a Lucene
  index built and opened per write had cost as much as encoding the document.
- **Merged.** Write segments merge as Lucene's log merge policy merges: every :data:`MERGE_FACTOR` segments of
  one level (a write's segment is level 0) become one segment of the next level, on disk, their live documents
  indexed again from the encodings their writes computed (:mod:`braid.indexer.encoding_memo`: a merge costs
  index structures, not model passes). A document is indexed again once per level (log of the writes), and at
  most ``MERGE_FACTOR - 1`` segments of each level are searched. :meth:`LiveCollection.optimize` folds everything
  into a new base corpus, from which fresh indexes are built.

State lives in ``INDEX_ROOT/<collection>/_writes/``: ``wal.jsonl``, ``base.json`` (the corpus the log applies to:
the collection's own until an optimize, then ``base-<seq>.jsonl`` here) and ``segments/``. One process writes a
collection at a time (the server; ``braid collection upsert`` when none runs).
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from braid.common.atomic_file import atomic_output, atomic_write_text
from braid.common.beir_format import read_corpus
from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError, DocumentsExist, UnknownDocuments, Unsupported
from braid.common.metadata_schema import check_document, parse_filter
from braid.common.passages import document_of, split_document
from braid.indexer.encoding_memo import EncodingMemo, remembering
from braid.indexer.manifest import Manifest
from braid.indexer.segment_build import build_segment, quiet_progress
from braid.indexer.splade_index import impact_vectors
from braid.indexer.write_log import WriteLog
from braid.retriever.bm25_retriever import BM25Retriever
from braid.retriever.kinds import RetrieverKind
from braid.retriever.memory_segment import MemoryBM25Segment, MemoryImpactSegment
from braid.retriever.protocol import Retriever
from braid.retriever.segmented_retriever import Segment, SegmentedRetriever

log = logging.getLogger(__name__)

STATE_DIR = "_writes"
#: Segments of one level merged into one of the next (Lucene's mergeFactor).
MERGE_FACTOR = 4
#: The level of the segment a restart builds over every written document: above any merge's, never merged again.
REPLAY_LEVEL = 1 << 16
#: A write of at most this many documents is a segment in memory for the Lucene kinds it has one of
#: (:mod:`braid.retriever.memory_segment`): no Lucene index built per write; the next merge writes one.
MEMORY_SEGMENT_DOCS = 256
MEMORY_KINDS = frozenset({"bm25", "splade"})


@dataclass(eq=False)
class _InMemory:
    """One index kind's part of a write segment kept in memory: the ids and what the kind scores them by (BM25:
    the texts, analyzed when a retriever opens it; SPLADE: the quantized impacts)."""

    kind: str
    doc_ids: list[str]
    payload: list[Any]

    def open(self, base: Retriever) -> Any:
        if self.kind == "bm25":
            if not isinstance(base, BM25Retriever):
                raise BraidError(f"a bm25 write segment needs a BM25 base index, not {type(base).__name__}")
            return MemoryBM25Segment(base, self.doc_ids, self.payload)
        return MemoryImpactSegment(self.doc_ids, self.payload)


@dataclass
class _Opened:
    """One retriever of an open pipeline over this collection: its kind, base index and search parameters."""

    info: RetrieverKind
    base: Path
    search_params: dict[str, Any]
    live: SegmentedRetriever
    # segment folder -> that folder opened with this retriever's search parameters
    opened: dict[Path | _InMemory, Retriever] = field(default_factory=dict)


@dataclass(frozen=True)
class _WriteSegment:
    seq: int  # the write (or merge, or replay) that made it
    root: Path  # its index folders, one per index kind, built by segment_build
    ids: frozenset[str]
    level: int = 0  # 0: one write's; L + 1: a merge of MERGE_FACTOR segments of level L


def state_dir(dataset: Dataset, index_root: Path) -> Path:
    return Path(index_root) / dataset.name / STATE_DIR


def has_writes(dataset: Dataset, index_root: Path) -> bool:
    """Whether writes were ever logged for this collection under ``index_root`` (a search must then see them)."""
    return (state_dir(dataset, index_root) / "base.json").is_file()


class LiveCollection:
    """The write side of one collection, shared by every pipeline opened over it (module docstring)."""

    def __init__(self, dataset: Dataset, index_root: Path, threads: int | None = None, writable: bool = True) -> None:
        """Open the collection's write state; ``writable``: as its one writer (a server, ``braid collection
        upsert``), else to search what was written (``braid search`` while a server writes)."""
        self.origin = dataset
        self.threads = threads
        self.writable = writable
        self.state = state_dir(dataset, index_root)
        self._lock_file = None  # the writer's lock, taken at the first write (readers and idle servers need none)
        base = self._read_base()
        self.dataset = self._base_dataset(base)
        self.log = WriteLog(self.state / "wal.jsonl", floor=int(base["seq"]))
        self._lock = threading.RLock()
        self._opened: list[_Opened] = []
        self.fields = dict(dataset.fields)
        # Declared metadata of the live base documents (what filters read); the written ones carry their own.
        self._base_metadata: dict[str, dict[str, Any]] = {}
        base_ids = []
        for document in self.dataset.iter_corpus():
            base_ids.append(document.doc_id)
            if self.fields and document.metadata:
                kept = {name: document.metadata[name] for name in self.fields if name in document.metadata}
                if kept:
                    self._base_metadata[document.doc_id] = kept
        self._base_ids = frozenset(base_ids)
        self._filters: dict[tuple[str, int], frozenset[str]] = {}  # (filter JSON, write seq) -> ids it hides
        # Bumped by every write once it is visible to searches: what cached answers are keyed by.
        self.version = 0
        self._segments: list[_WriteSegment] = []
        self._dead: list[set[str]] = [set()]  # per segment, the base first
        self._owner: dict[str, int] = dict.fromkeys(self._base_ids, 0)
        self._delta: dict[str, Document] = {}  # live documents written since the base, by id
        self._base_documents: dict[str, Document] | None = None
        # (base index, segment root) -> that kind's index there: a folder, or a part in memory
        self._folders: dict[tuple[Path, Path], Path | _InMemory] = {}
        self._merger: threading.Thread | None = None
        self._merge_wanted = threading.Event()
        self._merge_running = False
        self._merges = 0
        # What the writes encoded, for the merges that index those documents again (encoded once, not per level).
        self._memo = EncodingMemo()
        self._closed = False
        self._replay()

    # -- state on disk -----------------------------------------------------------------------------------------

    def _read_base(self) -> dict[str, Any]:
        path = self.state / "base.json"
        origin = self.origin.corpus_checksum()
        if not path.is_file():
            return {"origin": origin, "seq": 0, "corpus": None}
        base = json.loads(path.read_text(encoding="utf-8"))
        if base["origin"] != origin:
            raise BraidError(
                f"the documents of {self.origin.name!r} changed on disk after writes were logged against them "
                f"({self.state}); move that folder away to drop those writes, or restore the collection"
            )
        return base

    def _base_dataset(self, base: Mapping[str, Any]) -> Dataset:
        if not base.get("corpus"):
            return self.origin
        corpus = self.state / base["corpus"]
        return replace(
            self.origin,
            corpus_files=(corpus,),
            corpus_reader=lambda: read_corpus(corpus),
            _checksum=None,
        )

    def _write_base(self, seq: int, corpus: str | None) -> None:
        record = {"origin": self.origin.corpus_checksum(), "seq": seq, "corpus": corpus}
        atomic_write_text(self.state / "base.json", json.dumps(record) + "\n")

    def _replay(self) -> None:
        """Rebuild the in-memory view of the logged writes: which base documents are gone, which are new."""
        for record in self.log.records:
            for doc_id in [*record.delete, *(document.doc_id for document in record.upsert)]:
                self._delta.pop(doc_id, None)
                if doc_id in self._base_ids:
                    self._dead[0].add(doc_id)
            self._delta.update((document.doc_id, document) for document in record.upsert)
        self._owner = {doc_id: 0 for doc_id in self._base_ids if doc_id not in self._dead[0]}
        segments = self.state / "segments"
        if segments.is_dir():
            # Segments of earlier runs are rebuilt from the log (the replay folder's indexes are named by their
            # contents, so an unchanged log reopens them without a build).
            for folder in segments.iterdir():
                if folder.name != "replay":
                    shutil.rmtree(folder, ignore_errors=True)
        if self._delta:
            # One segment over every live written document, not one per logged batch.
            replayed = _WriteSegment(self.log.last_seq, segments / "replay", frozenset(self._delta), REPLAY_LEVEL)
            self._segments.append(replayed)
            self._dead.append(set())
            self._owner.update(dict.fromkeys(self._delta, 1))

    # -- reading ------------------------------------------------------------------------------------------------

    @property
    def doc_count(self) -> int:
        return len(self._owner)

    @property
    def seq(self) -> int:
        return self.log.last_seq

    def __contains__(self, doc_id: str) -> bool:
        return doc_id in self._owner

    def text(self, doc_id: str) -> str | None:
        """A live document's text (title, then text), as indexes saw it: for rerankers and display."""
        document = self.document(doc_id)
        return None if document is None else document.contents

    def document(self, doc_id: str) -> Document | None:
        """A live document as written (title, text, every metadata field), or None."""
        if doc_id in self._delta:
            return self._delta[doc_id]
        if self._owner.get(doc_id) != 0:
            return None
        documents = self._base_documents
        if documents is None:  # read once; not under the write lock, which a write holds while it indexes
            documents = self._base_documents = {d.doc_id: d for d in self.dataset.iter_corpus()}
        return documents.get(doc_id)

    def status(self, recent: int = 10) -> dict[str, Any]:
        """What a console shows of the collection: live documents, writes logged since its base, when the last
        was, the write segments searched beside the base, and the ``recent`` last writes (newest first)."""
        records = self.log.records
        last = ""
        if records:
            stamp = (self.state / "wal.jsonl").stat().st_mtime
            last = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))
        return {
            "name": self.origin.name,
            "documents": self.documents,
            "writes": len(records),
            "last_write_at": last,
            "segments": len(self._segments),
            "recent_writes": [
                {"seq": record.seq, "upserted": len(record.upsert), "deleted": len(record.delete)}
                for record in reversed(records[-recent:])
            ],
        }

    def metadata(self, doc_id: str) -> Mapping[str, Any] | None:
        if doc_id in self._delta:
            return self._delta[doc_id].metadata
        return self._base_metadata.get(doc_id)

    def hidden(self, spec: Any) -> frozenset[str]:
        """The live documents a filter (:mod:`braid.common.metadata_schema`) does not match: what a filtered search
        leaves out, inside each retriever. An invalid filter is an error naming what is wrong."""
        if not self.fields:
            raise BraidError(
                f"collection {self.origin.name!r} declares no metadata fields to filter on; declare them at creation: "
                "braid collection create NAME --from FILE --field NAME:TYPE"
            )
        key = (json.dumps(spec, sort_keys=True), self.log.last_seq)
        found = self._filters.get(key)
        if found is None:
            matches = parse_filter(spec, self.fields)
            found = frozenset(doc_id for doc_id in list(self._owner) if not matches(self.metadata(doc_id)))
            if len(self._filters) >= 64:  # a small cache: dashboards repeat a few filters
                self._filters.clear()
            self._filters[key] = found
        return found

    def live_documents(self) -> Iterator[Document]:
        """Every live document: the base's in its order, then the written ones in the order first written."""
        for document in self.dataset.iter_corpus():
            if self._owner.get(document.doc_id) == 0:
                yield document
        yield from self._delta.values()

    # -- retrievers ---------------------------------------------------------------------------------------------

    def retriever(self, info: RetrieverKind, base: Path, search_params: Mapping[str, Any]) -> SegmentedRetriever:
        """A retriever of kind ``info`` over the base index ``base`` and every write segment, kept current."""
        with self._lock:
            base_retriever = info.open(Path(base), search_params, self.threads)
            live = SegmentedRetriever(info.name, [Segment(base_retriever, self._base_ids)], search_params)
            opened = _Opened(info, Path(base), dict(search_params), live)
            self._publish(opened)
            self._opened.append(opened)
            return live

    def forget(self, retriever: Retriever) -> None:
        """Stop keeping ``retriever`` current (its pipeline was closed)."""
        with self._lock:
            self._opened = [opened for opened in self._opened if opened.live is not retriever]

    def _build(self, base: Path, documents: Sequence[Document], root: Path, level: int) -> Path | _InMemory:
        """The index of ``base``'s kind over ``documents`` for a segment of ``level`` under ``root``."""
        manifest = Manifest.read(base)
        with quiet_progress(), remembering(self._memo):
            if level == 0 and manifest.kind in MEMORY_KINDS and len(documents) <= MEMORY_SEGMENT_DOCS:
                ids = [document.doc_id for document in documents]
                if manifest.kind == "bm25":
                    return _InMemory("bm25", ids, [document.contents for document in documents])
                return _InMemory("splade", ids, [impacts for _, impacts in impact_vectors(documents, manifest.params)])
            # Only the replay segment outlives a restart (reopened when the log is unchanged): it alone is synced.
            durable = level == REPLAY_LEVEL
            return build_segment(manifest.kind, manifest.params, documents, root, base, self.threads, durable)

    def _folder(self, base: Path, position: int) -> Path | _InMemory | None:
        """The index of ``base``'s kind over write segment ``position`` (1-based), built from its live documents
        when this kind has none there yet (a pipeline opened after the write); None when none is live."""
        segment = self._segments[position - 1]
        key = (base, segment.root)
        if key not in self._folders:
            documents = [self._delta[i] for i in sorted(segment.ids) if self._owner.get(i) == position]
            if not documents:
                return None
            self._folders[key] = self._build(base, documents, segment.root, segment.level)
        return self._folders[key]

    def _open(self, opened: _Opened, part: Path | _InMemory) -> Retriever:
        """A segment's index of ``opened``'s kind, opened with its search parameters (a part in memory over its base
        retriever, whose analyzer and parameters it shares)."""
        if isinstance(part, _InMemory):
            return part.open(opened.live.segments[0].retriever)
        return opened.info.open(part, opened.search_params, self.threads)

    def _publish(self, opened: _Opened) -> None:
        segments = [Segment(opened.live.segments[0].retriever, self._base_ids, frozenset(self._dead[0]))]
        for position, segment in enumerate(self._segments, start=1):
            folder = self._folder(opened.base, position)
            if folder is None:
                continue
            if folder not in opened.opened:
                opened.opened[folder] = self._open(opened, folder)
            segments.append(Segment(opened.opened[folder], segment.ids, frozenset(self._dead[position])))
        kept = {id(segment.retriever) for segment in segments}
        opened.opened = {folder: r for folder, r in opened.opened.items() if id(r) in kept}
        opened.live.publish(segments)

    # -- writing -----------------------------------------------------------------------------------------------

    def upsert(self, documents: Sequence[Document]) -> int:
        """Add or replace ``documents`` (the last of one id wins), durably and visibly; returns the live count.

        In a collection of passages, a document is cut as the collection was, and its earlier passages go."""
        batch = list({document.doc_id: document for document in documents}.values())
        settings = self.origin.passages
        if settings is None:
            return self._write(batch, [])
        with self._lock:
            replaced = self._passages_of({document.doc_id for document in batch})
            passages = [passage for document in batch for passage in split_document(document, settings)]
            fresh = {passage.doc_id for passage in passages}
            return self._write(passages, [doc_id for doc_id in replaced if doc_id not in fresh])

    def _passages_of(self, doc_ids: set[str]) -> list[str]:
        """The live passages of documents ``doc_ids`` (in a collection of passages)."""
        return [doc_id for doc_id in self._owner if document_of(doc_id) in doc_ids]

    @property
    def documents(self) -> int:
        """Live documents: passages counted once per document in a collection of passages."""
        if self.origin.passages is None:
            return self.doc_count
        return len({document_of(doc_id) for doc_id in self._owner})

    def add(self, documents: Sequence[Document]) -> int:
        """Add new documents; an id the collection holds refuses the whole batch (ALREADY_EXISTS)."""
        batch = list({document.doc_id: document for document in documents}.values())
        with self._lock:
            if self.origin.passages is not None:
                held = sorted(set(map(document_of, self._owner)) & {document.doc_id for document in batch})
            else:
                held = [document.doc_id for document in batch if document.doc_id in self._owner]
            if held:
                raise DocumentsExist(
                    f"{len(held)} id(s) are in the collection already, e.g. {held[:5]}; nothing added (upsert "
                    "replaces documents)"
                )
            return self.upsert(batch)

    def delete(self, doc_ids: Sequence[str]) -> int:
        """Delete live documents by id (an unknown id refuses the whole batch); returns the live count."""
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            if self.origin.passages is not None:  # a document's id deletes its passages
                held = {document_of(doc_id) for doc_id in self._owner}
                unknown = [doc_id for doc_id in ids if doc_id not in held]
                if not unknown:
                    return self._write([], self._passages_of(set(ids)))
            else:
                unknown = [doc_id for doc_id in ids if doc_id not in self._owner]
            if unknown:
                raise UnknownDocuments(
                    f"{len(unknown)} id(s) are not in the collection, e.g. {unknown[:5]}; nothing deleted"
                )
            return self._write([], ids)

    def try_writer_lock(self) -> bool:
        """Take the collection's writer lock now if it is free (a server at start, so that ``braid collection
        upsert`` is refused while it runs); whether it is held. Writes take it anyway, or fail naming the holder."""
        if self._lock_file is not None:
            return True
        if not self.writable:
            return False
        self.state.mkdir(parents=True, exist_ok=True)
        handle = (self.state / "LOCK").open("a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        # Anything logged by the previous writer since this view was read must be in it before this one writes.
        if self.log.reload():
            raise Unsupported(
                f"collection {self.origin.name!r} was written by another process since it was opened here; "
                "reopen it (restart the server) before writing"
            )
        return True

    def _take_writer_lock(self) -> None:
        """One writer per collection: a second process (or server) writing the same log would interleave it."""
        if not self.writable:
            raise BraidError(f"collection {self.origin.name!r} was opened for searching only")
        if not self.try_writer_lock():
            raise Unsupported(
                f"collection {self.origin.name!r} is being written by another process or server (its lock: "
                f"{self.state / 'LOCK'}); write through that one, or stop it first"
            )

    def _write(self, upsert: list[Document], delete: list[str]) -> int:
        upsert = [
            replace(document, metadata=check_document(self.fields, document.metadata, f"document {document.doc_id!r}"))
            for document in upsert
        ]
        with self._lock:
            self._take_writer_lock()
            seq = self.log.last_seq + 1
            root = self.state / "segments" / f"{seq:012d}"
            if upsert:
                # Index the batch for every index kind in use, and open it for every retriever, before the log hears
                # of it: a failure here leaves nothing behind (the segment folder goes) and the write is refused.
                built: list[Path | _InMemory] = []
                try:
                    for base in dict.fromkeys(opened.base for opened in self._opened):
                        built.append(self._build(base, upsert, root, 0))
                        self._folders[(base, root)] = built[-1]
                    for opened in self._opened:
                        part = self._folders[(opened.base, root)]
                        opened.opened[part] = self._open(opened, part)
                except BaseException:
                    self._folders = {key: path for key, path in self._folders.items() if key[1] != root}
                    for opened in self._opened:
                        opened.opened = {key: value for key, value in opened.opened.items() if key not in built}
                    shutil.rmtree(root, ignore_errors=True)
                    raise
            if not (self.state / "base.json").is_file():
                self._write_base(self.log.floor, None)
            self.log.append(upsert, delete)  # the commit point: durable from here
            for doc_id in [*delete, *(document.doc_id for document in upsert)]:
                owner = self._owner.pop(doc_id, None)
                if owner is not None:
                    self._dead[owner].add(doc_id)
                self._delta.pop(doc_id, None)
            if upsert:
                self._segments.append(_WriteSegment(seq, root, frozenset(d.doc_id for d in upsert)))
                self._dead.append(set())
                for document in upsert:
                    self._delta[document.doc_id] = document
                    self._owner[document.doc_id] = len(self._segments)
            for opened in self._opened:
                self._publish(opened)
            # After the write is visible, before it is acknowledged: answers cached under an older version are
            # never served again (braid.service.result_cache).
            self.version += 1
            self._wake_merger()
            return self.doc_count

    # -- merging (in the background: a write never waits for one) ----------------------------------------------

    def _wake_merger(self) -> None:
        if self._merger is None:
            self._merger = threading.Thread(target=self._merge_loop, name=f"merge-{self.origin.name}", daemon=True)
            self._merger.start()
        self._merge_wanted.set()

    def wait_merges(self, timeout: float = 600) -> None:
        """Block until no merge is due or running (tests, benchmarks, optimize)."""
        deadline = time.monotonic() + timeout
        while self._merge_wanted.is_set() or self._merge_running:
            if time.monotonic() > deadline:
                raise TimeoutError("segment merges still running")
            time.sleep(0.01)

    def _merge_loop(self) -> None:
        while not self._closed:
            if not self._merge_wanted.wait(1.0) or self._closed:
                continue
            with self._lock:
                self._merge_running = True
                self._merge_wanted.clear()
            try:
                while not self._closed and self._merge_once():
                    pass
            except Exception:  # a merge only re-indexes what the log holds: the segments stay as they were
                log.exception("merging the write segments of %s failed", self.origin.name)
            finally:
                self._merge_running = False

    def _merge_once(self) -> bool:
        """While the last :data:`MERGE_FACTOR` write segments share a level, index their live documents again as
        one segment of the next level (module docstring): a base-``MERGE_FACTOR`` counter. The documents are
        indexed outside the lock (writes go on, appending segments after these); the swap happens under it."""
        with self._lock:
            if len(self._segments) < MERGE_FACTOR:
                return False
            tail = self._segments[-MERGE_FACTOR:]
            level = tail[0].level
            if level == REPLAY_LEVEL or any(segment.level != level for segment in tail):
                return False
            first = len(self._segments) - MERGE_FACTOR + 1  # the tail's first position (the base is 0)
            last = len(self._segments)
            live = (doc_id for segment in tail for doc_id in sorted(segment.ids) if first <= self._owner.get(doc_id, 0))
            ids = list(dict.fromkeys(live))  # an id in two of the tail's segments is live in the later one
            documents = [self._delta[doc_id] for doc_id in ids]
            bases = list(dict.fromkeys(opened.base for opened in self._opened))
            self._merges += 1
            root = self.state / "segments" / f"merge-{self._merges:06d}-L{level + 1}"
        folders = {(base, root): self._build(base, documents, root, level + 1) for base in bases} if documents else {}
        with self._lock:
            # Writes since the plan appended segments after ``last`` (positions first..last are as planned: only this
            # thread merges) and may have replaced or deleted some of these documents: those are dead here.
            still = {doc_id for doc_id in ids if first <= self._owner.get(doc_id, -1) <= last}
            shift = MERGE_FACTOR - 1 if documents else MERGE_FACTOR
            merged = [_WriteSegment(self.log.last_seq, root, frozenset(ids), level + 1)] if documents else []
            retired = [segment.root for segment in self._segments[first - 1 : last]]
            self._segments[first - 1 : last] = merged
            self._dead[first : last + 1] = [set(ids) - still] if documents else []
            for doc_id, owner in self._owner.items():
                if first <= owner <= last:
                    self._owner[doc_id] = first
                elif owner > last:
                    self._owner[doc_id] = owner - shift
            self._folders = {key: path for key, path in self._folders.items() if key[1] not in retired}
            self._folders.update(folders)
            for opened in self._opened:
                self._publish(opened)
        for old in retired:  # no retriever reads them now (open files outlive their names)
            shutil.rmtree(old, ignore_errors=True)
        return True

    # -- optimize -----------------------------------------------------------------------------------------------

    def optimize(self, build: Callable[[Dataset], None]) -> Dataset:
        """Fold every logged write into a new base corpus, have ``build(dataset)`` build its indexes, then drop the
        log's folded records; returns the new base dataset (which the caller reopens its pipelines over). Writes
        wait meanwhile; searches go on over the current state."""
        self.wait_merges()
        with self._lock:
            self._take_writer_lock()
            seq = self.log.last_seq
            name = f"base-{seq:012d}.jsonl"
            target = self.state / name
            with atomic_output(target) as scratch, scratch.open("w", encoding="utf-8") as handle:
                for document in self.live_documents():
                    row = {"_id": document.doc_id, "title": document.title, "text": document.text}
                    if document.metadata:
                        row["metadata"] = document.metadata
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            dataset = replace(
                self.origin, corpus_files=(target,), corpus_reader=lambda: read_corpus(target), _checksum=None
            )
            build(dataset)  # the new base's indexes, complete before anything switches to them
            self._write_base(seq, name)  # the switch
            self.log.keep_after(seq)
            for old in self.state.glob("base-*.jsonl"):
                if old.name != name:
                    old.unlink(missing_ok=True)
            shutil.rmtree(self.state / "segments", ignore_errors=True)
        self.close()  # this view is of the old base: the caller opens the collection again
        return dataset

    def close(self) -> None:
        self._closed = True
        if self._merger is not None:
            self._merge_wanted.set()
            self._merger.join(600)
        self.log.close()
        if self._lock_file is not None:
            self._lock_file.close()
