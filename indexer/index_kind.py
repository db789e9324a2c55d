"""What an index kind is: the one object that owns everything braid knows about a kind of index.

Its build parameters (with defaults and docs: they fix the index folder's digest, so build and search must agree
on them), how to build it from a dataset, which other indexes it is built from, how a build job encodes it in
shards and assembles them, and whether it takes document updates in place. Retrievers name the kind they search
(:mod:`braid.retriever.kinds`) and read its parameters from here; nothing restates them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.common.dataset import Document
from braid.indexer.params import merge_params


@dataclass(frozen=True)
class Param:
    """One parameter: its default, which also fixes its type (an int is accepted where a float is expected).

    ``added``: a parameter a kind gained after indexes of it existed; at its default it stays out of an index's
    identity (:func:`braid.indexer.index_store.index_identity`), so the folders built before it keep their names.
    """

    default: Any
    doc: str
    added: bool = False

    @property
    def type(self) -> type:
        return type(self.default)


def defaults(params: Mapping[str, Param]) -> dict[str, Any]:
    return {name: param.default for name, param in params.items()}


@dataclass(frozen=True)
class Shards:
    """How a build job builds the kind in pieces: ``encode(documents, out_dir, params) -> count`` writes one shard's
    encoded form; ``assemble(shard_dirs, out_dir, params, threads) -> count`` merges the shards, in order, into the
    index a one-piece build writes."""

    encode: Callable[[Sequence[Document], Path, dict], int]
    assemble: Callable[[Sequence[Path], Path, dict, int | None], int]


@dataclass(frozen=True)
class Staged:
    """A change written beside an index's live state and not yet visible: ``generation`` names it in ``index_dir``."""

    index_dir: Path
    generation: str


@dataclass(frozen=True)
class Updates:
    """In-place document updates of a built index, in two phases so that one change can span several indexes (the
    shards of a sharded index commit together or not at all: :mod:`braid.indexer.update_transaction`).

    ``stage_add(index_dir, [(id, text), ...])`` and ``stage_delete(index_dir, ids)`` write the changed index beside
    the live one (refusing bad input with nothing written); ``publish(staged)`` makes it live and returns the new
    document count, and may be repeated (recovery after a crash repeats it); ``discard(staged)`` removes it.
    ``doc_ids(index_dir)`` lists the live ids; ``lock(index_dir)`` excludes other writers, and staging and publishing
    run under it.
    """

    stage_add: Callable[[Path, Sequence[tuple[str, str]]], Staged]
    stage_delete: Callable[[Path, Sequence[str]], Staged]
    publish: Callable[[Staged], int]
    discard: Callable[[Staged], None]
    doc_ids: Callable[[Path], list[str]]
    lock: Callable[[Path], AbstractContextManager[None]]


@dataclass(frozen=True)
class IndexKind:
    """An index kind: the name users pass to ``--kind`` and everything that goes with it.

    ``check`` rejects merged parameters that are well typed but invalid (ranges, choices). ``requires`` maps a role
    to the (kind name, parameters) of another index this one is built from; those are built first, in the same index
    root, and passed to ``build(dataset, out_dir, params, threads, **role_paths)``. Kinds derived from others have no
    ``shards``: a build job derives them from the assembled indexes.
    ``encoded`` marks kinds whose vectors come from a neural encoder.
    """

    name: str
    params: Mapping[str, Param]
    build: Callable[..., int]
    check: Callable[[dict[str, Any]], None] | None = None
    requires: Callable[[dict[str, Any]], dict[str, tuple[str, dict[str, Any]]]] | None = None
    shards: Shards | None = None
    updates: Updates | None = None
    # Its vectors come from a neural encoder (directly or through an index it is built from), so an encoder
    # runtime that changes the encoder's outputs (int8) gives it folders of its own.
    encoded: bool = False

    @property
    def defaults(self) -> dict[str, Any]:
        return defaults(self.params)

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in; unknown names, wrong types and invalid values are errors naming what is allowed."""
        merged = merge_params(self.name, params, self.defaults)
        if self.check is not None:
            self.check(merged)
        return merged
