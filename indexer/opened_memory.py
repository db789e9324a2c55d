"""What an index costs in memory once a retriever opens it: bytes loaded into RAM, and bytes memory-mapped.

Loaded bytes are resident for as long as the index is open. Memory-mapped bytes are read on demand: the kernel keeps
the pages a query touched in its page cache and drops them under pressure, so they bound what the index can hold,
not what it does. Per kind, as its retriever opens it:

- ``bm25``, ``splade``: Lucene's MMapDirectory maps every index file; the ids list is loaded.
- ``slim``: its impact index (Lucene, mapped) and its token arrays (numpy memory maps).
- ``embeddings`` (dense retrieval): faiss's exact IndexFlatIP holds every vector as float32 (twice the float16 file);
  the float16 file stays mapped for rescoring.
- ``binary``: the codes and faiss's binary index are loaded; the float embeddings it rescores with stay mapped.
- ``tokens``: mapped.
- ``multivector``: the pooled token vectors are mapped (MaxSim reads only its candidates' rows); loaded: the centroids,
  document offsets, and the inverted file (per token: its centroid and document, int32, and its place in the
  centroid-sorted list, int64: 16 bytes a token).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from braid.indexer.manifest import MANIFEST_NAME, Manifest

# A loaded document id: the Python string, its list slot and a dict entry (id -> row) beside it.
ID_BYTES = 120


@dataclass(frozen=True)
class OpenedMemory:
    loaded_bytes: int
    mapped_bytes: int

    def __add__(self, other: OpenedMemory) -> OpenedMemory:
        return OpenedMemory(self.loaded_bytes + other.loaded_bytes, self.mapped_bytes + other.mapped_bytes)

    def to_json(self) -> dict[str, int]:
        return {"loaded_bytes": self.loaded_bytes, "mapped_bytes": self.mapped_bytes}


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in Path(folder).rglob("*") if path.is_file() and path.name != MANIFEST_NAME)


def opened_memory(index_dir: Path) -> OpenedMemory:
    """The loaded and memory-mapped bytes of the index in ``index_dir`` as its retriever opens it."""
    index_dir = Path(index_dir)
    manifest = Manifest.read(index_dir)
    ids = manifest.doc_count * ID_BYTES
    kind = manifest.kind
    if kind in ("bm25", "splade", "slim"):
        return OpenedMemory(ids, _folder_bytes(index_dir))
    if kind == "embeddings":
        matrix = _size(index_dir / "embeddings.f16")
        return OpenedMemory(ids + 2 * matrix, matrix)
    if kind == "binary":
        embeddings = manifest.dependency(index_dir, "embeddings")
        loaded = _size(index_dir / "codes.u8") + _size(index_dir / "faiss.index")
        return OpenedMemory(ids + loaded, _size(embeddings / "embeddings.f16"))
    if kind == "tokens":
        return OpenedMemory(ids + _size(index_dir / "doc_offsets.i64"), _size(index_dir / "tokens.f16"))
    if kind == "multivector":
        from braid.indexer.multivector_index import META_NAME, current_generation

        generation = current_generation(index_dir)
        meta = json.loads((generation / META_NAME).read_text(encoding="utf-8"))
        loaded = 16 * int(meta["tokens"]) + _size(generation / "centroids.f32") + _size(generation / "doc_offsets.i64")
        return OpenedMemory(ids + loaded, _size(generation / "tokens.f16"))
    return OpenedMemory(ids, _folder_bytes(index_dir))
