"""Every index kind by the name users pass to ``--kind``; each kind object lives beside its builder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from braid.common.errors import BraidError, Unsupported
from braid.indexer import (
    binary_index,
    bm25_index,
    embedding_index,
    multivector_index,
    slim_index,
    splade_index,
    token_index,
)
from braid.indexer.index_kind import IndexKind, Updates
from braid.indexer.manifest import Manifest
from braid.indexer.update_transaction import Change, commit_changes, settle

INDEX_KINDS: dict[str, IndexKind] = {
    kind.name: kind
    for kind in (
        binary_index.KIND,
        bm25_index.KIND,
        embedding_index.KIND,
        multivector_index.KIND,
        slim_index.KIND,
        splade_index.KIND,
        token_index.KIND,
    )
}


def index_kind(name: str) -> IndexKind:
    """The kind called ``name``, or an error naming the kinds there are."""
    if name not in INDEX_KINDS:
        raise BraidError(f"unknown index kind {name!r} (allowed: {', '.join(INDEX_KINDS)})")
    return INDEX_KINDS[name]


def updatable_kinds() -> list[str]:
    return [name for name, kind in INDEX_KINDS.items() if kind.updates is not None]


def index_updates(index_dir: Path) -> Updates:
    """How the built index at ``index_dir`` takes document updates, or an error if its kind takes none."""
    kind = index_kind(Manifest.read(index_dir).kind)
    if kind.updates is None:
        raise Unsupported(
            f"{index_dir} is a {kind.name} index, which takes no updates (updatable: {', '.join(updatable_kinds())}); "
            "rebuild it instead"
        )
    return kind.updates


def settle_updates(index_dir: Path) -> None:
    """Finish or undo an interrupted document update of the index at ``index_dir`` (kinds that take updates), so
    its manifest and contents are read as committed (:mod:`braid.indexer.update_transaction`)."""
    updates = index_kind(Manifest.read(index_dir).kind).updates
    if updates is not None:
        settle(Path(index_dir), updates)


def add_documents(index_dir: Path, documents: Sequence[tuple[str, str]]) -> int:
    """Add ``(doc_id, text)`` documents to one index of a kind that takes updates; returns its new document count."""
    path = Path(index_dir)
    return commit_changes([Change(path, index_updates(path), add=documents)])[path]


def delete_documents(index_dir: Path, doc_ids: Sequence[str]) -> int:
    """Remove documents by id from one index of a kind that takes updates; returns its new document count."""
    path = Path(index_dir)
    return commit_changes([Change(path, index_updates(path), delete=doc_ids)])[path]
