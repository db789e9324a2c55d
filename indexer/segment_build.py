"""Small indexes over a batch of written documents: the segments a live collection adds beside its base index.

A segment is an index of the base's own kind and parameters, built by the kind's own builder (what a fresh build
of those documents would write), so a retriever opens it like any index and its scores compare with the base's
exactly as a shard's do (:mod:`braid.retriever.sharded_retriever`). Kinds that learn from the corpus (the binary
binarizer, the multi-vector centroids) code a segment with the base's trained parts, as a build job's shards do.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.thread_scoped import ThreadScoped
from braid.indexer.index_store import build_index
from braid.indexer.kinds import index_kind


def memory_dataset(name: str, documents: Sequence[Document]) -> Dataset:
    """A dataset over documents held in memory (a write batch), checksummed by their contents."""
    digest = hashlib.sha256()
    for document in documents:
        digest.update(f"{document.doc_id}\0{document.title}\0{document.text}\n".encode())
    dataset = Dataset(
        name=name,
        root=Path("."),
        layout="memory",
        corpus_files=(),
        corpus_reader=lambda: iter(documents),
        queries_reader=dict,
        qrels_readers={},
    )
    dataset._checksum = digest.hexdigest()
    return dataset


_quiet: ThreadScoped[bool] = ThreadScoped(False)
_original_init = tqdm.__init__


def _init(self, *args, **kwargs) -> None:
    if _quiet.get():
        kwargs["disable"] = True
    _original_init(self, *args, **kwargs)


tqdm.__init__ = _init  # progress bars off on a thread inside quiet_progress(), as they were everywhere else


def quiet_progress() -> AbstractContextManager[None]:
    """No progress bars from the builds of a write on this thread (a server would print one per write and kind)."""
    return _quiet.scope(True)


def build_segment(
    kind: str,
    params: dict,
    documents: Sequence[Document],
    root: Path,
    base: Path,
    threads: int | None = None,
    durable: bool = True,
) -> Path:
    """Index ``documents`` as a ``kind`` index under ``root`` (its dependencies beside it), trained parts taken from
    the ``base`` index; returns the segment's folder. ``durable`` False: not synced to disk (a segment that a
    restart rebuilds from the write-ahead log)."""
    # Kinds that learn from the corpus (binary, multivector) take the base's binarizer or centroids.
    takes_trained = "trained" in inspect.signature(index_kind(kind).build).parameters
    dataset = memory_dataset("segment", documents)
    built = build_index(
        dataset,
        kind,
        params,
        index_root=root,
        threads=threads,
        quiet=True,
        trained=Path(base) if takes_trained else None,
        durable=durable,
    )
    return built[0]
