"""Pooled multi-vector index: token pooling, centroids, an inverted file from centroids to tokens, and
document updates without a rebuild.

Token pooling (Clavié, Chaffin and Adams, "Reducing the Footprint of Multi-Vector Retrieval with Minimal
Performance Impact via Token Pooling", 2024) clusters each document's token vectors hierarchically (Ward linkage
on cosine distance) into about ``tokens / pool_factor`` groups and keeps each group's mean; the first
``protected_tokens`` ([CLS]) stay as they are. sentence-transformers' ``HierarchicalTokenPooling`` does it.

Candidate generation follows PLAID (Santhanam et al., CIKM 2022): spherical k-means centroids over the pooled
tokens (faiss), every token assigned to its nearest centroid; a query token probes its nearest centroids and
the inverted file yields the tokens, hence the documents, to score.

Builds stream, so that their memory does not grow with the collection: each document is pooled as it is read and
written at once; k-means trains on the sample faiss itself would draw (read back from a scratch file of the pooled
float32 tokens), capped at :data:`SAMPLE_LIMIT` points; tokens are assigned to centroids a chunk at a time.

Layout: ``manifest.json``, ``CURRENT`` (the name of the live generation) and ``gen-NNNNNN/`` holding
``tokens.f16`` (pooled tokens, float16, documents back to back; with ``precision = "int8"``, ``tokens.i8`` and
``token_scales.f32`` instead: :mod:`braid.indexer.token_precision`), ``doc_offsets.i64``, ``doc_ids.txt``,
``token_centroid.i32``, ``centroids.f32`` and ``multivector.json``. Adding or deleting documents writes a new
generation beside the live one, then switches ``CURRENT`` with an atomic rename: a reader sees the old index or
the new one, never a mixture, and a crash mid-way leaves the old one live. Centroids are kept across updates
(new tokens are assigned to the existing ones), as PLAID's incremental indexing does. An update that spans several
indexes (the shards of a sharded index) stages a generation in each and publishes them all or none
(:mod:`braid.indexer.update_transaction`).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
import torch
from tqdm import tqdm

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset import Dataset
from braid.common.errors import BraidError, DocumentsExist, UnknownDocuments
from braid.indexer.index_kind import IndexKind, Param, Staged, Updates
from braid.indexer.manifest import MANIFEST_NAME, Manifest, file_checksums
from braid.indexer.matrix_file import gather_rows, read_blocks
from braid.indexer.params import require_at_least
from braid.indexer.token_index import PARAMS as TOKEN_PARAMS
from braid.indexer.token_index import TokenStore, encoder_for, has_tokens
from braid.indexer.token_precision import TokenWriter, check_precision, stored_precision
from braid.indexer.update_transaction import settle

# The token index this one pools is built with the same model and lengths (its own parameters).
PARAMS = {
    **TOKEN_PARAMS,
    "pool_factor": Param(1, "token pooling factor, 1..4"),
    "protected_tokens": Param(1, "leading tokens never pooled ([CLS])"),
    "centroids": Param(0, "k-means centroids; 0 = a power of two near 2 sqrt(tokens)"),
    "seed": Param(0, "k-means seed"),
    "precision": Param(
        "float16", "stored token vectors: float16, or int8 with a scale per token (half the size)", added=True
    ),
}
META_NAME = "multivector.json"
POOL_FACTORS = (1, 2, 3, 4)
# faiss's own bound on k-means training points per centroid (it samples the rest away).
MAX_POINTS_PER_CENTROID = 64
# k-means training points at most (200 MB of 384-dimensional float32 vectors): faiss's own sample (count x 64) up to
# 2,048 centroids, i.e. up to ~4.2 million tokens; past that, 131,072 points whatever the collection's size.
SAMPLE_LIMIT = 1 << 17
# Tokens up to which the sample is drawn by faiss's own permutation of them all (4 bytes each: 64 MB).
PERMUTATION_LIMIT = 1 << 24
# Tokens per nearest-centroid search (as many per read of the pooled-token scratch file).
ASSIGN_CHUNK = 65536
POOLED_SCRATCH = "_pooled.f32"  # pooled float32 tokens, inside the build folder while it builds


def _check(merged: dict) -> None:
    if merged["pool_factor"] not in POOL_FACTORS:
        raise BraidError(f"multivector pool_factor must be one of 1, 2, 3, 4, got {merged['pool_factor']!r}")
    require_at_least("multivector", merged, ("protected_tokens", "centroids", "seed"), minimum=0)
    check_precision(merged["precision"])


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def requires(params: dict) -> dict[str, tuple[str, dict]]:
    return {"tokens": ("tokens", {name: params[name] for name in TOKEN_PARAMS})}


def document_pooler(params: dict) -> Callable[[np.ndarray], np.ndarray]:
    """A function pooling one document's tokens (pool factor 1 only re-normalizes) into a float32 array."""
    from sentence_transformers.multi_vector_encoder.modules.token_pooling import HierarchicalTokenPooling

    pooling = HierarchicalTokenPooling(float(params["pool_factor"]), num_protected_tokens=params["protected_tokens"])

    def pool(tokens: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.asarray(tokens, dtype=np.float32))
        return pooling.pool([tensor])[0].numpy() if params["pool_factor"] > 1 else _normalize(tensor)

    return pool


def pool_documents(documents: Iterable[np.ndarray], params: dict, total: int | None = None) -> list[np.ndarray]:
    """Pool each document's tokens (pool factor 1 only re-normalizes), as float32 arrays."""
    pool = document_pooler(params)
    bar = tqdm(documents, total=total, desc=f"pool x{params['pool_factor']}", unit="doc", file=sys.stderr)
    return [pool(tokens) for tokens in bar]


def _normalize(tensor: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(tensor, dim=-1).numpy()


def centroid_count(tokens: int, requested: int) -> int:
    """PLAID's rule of thumb, scaled down for CPU: a power of two near 2 sqrt(tokens), at most one per token."""
    if requested:
        return min(requested, tokens)
    return int(min(tokens, max(1, 2 ** int(np.floor(np.log2(2 * np.sqrt(max(tokens, 1))))))))


def train_centroids(tokens: np.ndarray, count: int, seed: int) -> np.ndarray:
    kmeans = faiss.Kmeans(
        tokens.shape[1], count, niter=10, seed=seed + 1, spherical=True, max_points_per_centroid=64, verbose=False
    )
    kmeans.train(np.ascontiguousarray(tokens, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


def sample_rows(total: int, count: int, seed: int) -> np.ndarray:
    """The rows k-means trains on when ``total`` tokens go to ``count`` centroids: the rows faiss itself would
    draw (a permutation from its generator seeded as :func:`train_centroids` seeds it, the first ``count`` x 64),
    so that a build from a file trains exactly the centroids of a build from memory, and at most
    :data:`SAMPLE_LIMIT` of them, so that the sample stops growing with the collection. Past
    :data:`PERMUTATION_LIMIT` tokens (faiss's permutation of them all would itself grow), rows drawn by numpy."""
    wanted = min(count * MAX_POINTS_PER_CENTROID, SAMPLE_LIMIT)
    if total <= wanted:
        return np.arange(total, dtype=np.int64)
    if total <= PERMUTATION_LIMIT:
        permutation = np.empty(total, dtype=np.int32)
        faiss.rand_perm(faiss.swig_ptr(permutation), total, seed + 1)
        return permutation[:wanted].astype(np.int64)
    return np.random.default_rng(seed).choice(total, size=wanted, replace=False).astype(np.int64)


def assign_blocks(blocks: Iterable[np.ndarray], centroids: np.ndarray) -> Iterator[np.ndarray]:
    """Nearest centroid (inner product, int32) of every token of each block, block by block."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    for block in blocks:
        yield index.search(np.asarray(block, dtype=np.float32), 1)[1][:, 0].astype(np.int32)


def assign(tokens: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Nearest centroid (inner product) of every token, in chunks so float32 copies stay small."""
    chunks = (tokens[start : start + ASSIGN_CHUNK] for start in range(0, len(tokens), ASSIGN_CHUNK))
    parts = list(assign_blocks(chunks, centroids))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def write_generation(
    folder: Path,
    doc_ids: Sequence[str],
    documents: Iterable[np.ndarray],
    centroids: np.ndarray,
    assignments: np.ndarray,
    precision: str = "float16",
) -> None:
    """Write a generation; ``documents`` (one token array per id) are written as they come, never held together."""
    folder.mkdir(parents=True)
    lengths = []
    with TokenWriter(folder, precision) as writer:
        for tokens in documents:
            writer.write(tokens)
            lengths.append(len(tokens))
    if len(lengths) != len(doc_ids):
        raise BraidError(f"{len(lengths)} documents' tokens for {len(doc_ids)} ids")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    offsets.tofile(folder / "doc_offsets.i64")
    (folder / "doc_ids.txt").write_text("".join(f"{doc_id}\n" for doc_id in doc_ids), encoding="utf-8")
    np.asarray(assignments, dtype=np.int32).tofile(folder / "token_centroid.i32")
    _write_meta(folder, len(lengths), centroids, int(offsets[-1]))


def _write_meta(folder: Path, documents: int, centroids: np.ndarray, tokens: int) -> None:
    np.asarray(centroids, dtype=np.float32).tofile(folder / "centroids.f32")
    meta = {"documents": documents, "dimension": int(centroids.shape[1]), "tokens": tokens, "centroids": len(centroids)}
    (folder / META_NAME).write_text(json.dumps(meta) + "\n", encoding="utf-8")


def build_multivector_index(
    dataset: Dataset,
    out_dir: Path,
    params: dict,
    threads: int | None = None,
    *,
    tokens: Path,
    trained: Path | None = None,
) -> int:
    """Pool, cluster and write the tokens; ``trained``: a multivector index of the whole collection whose centroids
    this one (a shard of it) uses, so that candidate generation and bounds match the unsharded index's.

    Streams: each document is pooled as it is read and written at once (float16 to the index, float32 to a scratch
    file in the build folder); k-means trains on a sample gathered from the scratch file and the tokens are then
    assigned to centroids a chunk at a time. Memory holds one chunk and the sample, never the collection's tokens."""
    params = validate_params(params)
    store = TokenStore(tokens)
    folder = out_dir / "gen-000000"
    folder.mkdir(parents=True)
    scratch = out_dir / POOLED_SCRATCH
    pool = document_pooler(params)
    offsets = np.zeros(len(store) + 1, dtype=np.int64)
    bar = tqdm(total=len(store), desc=f"pool x{params['pool_factor']}", unit="doc", file=sys.stderr)
    with scratch.open("wb") as pooled_out, TokenWriter(folder, params["precision"]) as tokens_out, bar:
        for row, document in enumerate(store.read_documents()):
            pooled = pool(document)
            pooled_out.write(np.ascontiguousarray(pooled, dtype=np.float32).tobytes())
            tokens_out.write(pooled)
            offsets[row + 1] = offsets[row] + len(pooled)
            bar.update(1)
    total = int(offsets[-1])
    if total == 0:
        raise BraidError(f"dataset {dataset.name!r} has no tokens to index")
    if trained is not None:
        centroids = np.fromfile(current_generation(trained) / "centroids.f32", dtype=np.float32)
        centroids = centroids.reshape(-1, store.dimension)
    else:
        count = centroid_count(total, params["centroids"])
        sample = gather_rows(scratch, np.float32, store.dimension, sample_rows(total, count, params["seed"]))
        centroids = train_centroids(sample, count, params["seed"])
        del sample
    blocks = (block for _, block in read_blocks(scratch, np.float32, store.dimension, ASSIGN_CHUNK))
    with (folder / "token_centroid.i32").open("wb") as assignments:
        for nearest in assign_blocks(blocks, centroids):
            assignments.write(nearest.tobytes())
    scratch.unlink()
    offsets.tofile(folder / "doc_offsets.i64")
    (folder / "doc_ids.txt").write_text("".join(f"{doc_id}\n" for doc_id in store.doc_ids), encoding="utf-8")
    _write_meta(folder, len(store), centroids, total)
    (out_dir / "CURRENT").write_text("gen-000000\n", encoding="utf-8")
    return len(store)


def current_generation(index_dir: Path) -> Path:
    pointer = Path(index_dir) / "CURRENT"
    if not pointer.is_file():
        raise BraidError(f"{index_dir} is not a multivector index (no CURRENT file)")
    return Path(index_dir) / pointer.read_text(encoding="utf-8").strip()


class MultiVectorStore(TokenStore):
    """The live generation of a multi-vector index: pooled tokens, centroids and the inverted file."""

    def __init__(self, index_dir: Path, settled: bool = False) -> None:
        if not settled:
            # An update that spans shards and was interrupted is finished (or undone) before anyone reads.
            settle(Path(index_dir), UPDATES)
        self.generation = current_generation(index_dir)
        super().__init__(self.generation, META_NAME)
        self.centroids = np.fromfile(self.generation / "centroids.f32", dtype=np.float32).reshape(-1, self.dimension)
        self.token_centroid = np.fromfile(self.generation / "token_centroid.i32", dtype=np.int32)
        self.token_doc = np.repeat(np.arange(len(self.doc_ids), dtype=np.int32), np.diff(self.offsets))
        # Inverted file: tokens grouped by centroid (a stable sort keeps token order inside each list).
        self.ivf_tokens = np.argsort(self.token_centroid, kind="stable").astype(np.int64)
        counts = np.bincount(self.token_centroid, minlength=len(self.centroids))
        self.ivf_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def list_tokens(self, centroids: np.ndarray) -> np.ndarray:
        """Token ids in the inverted lists of ``centroids``."""
        pieces = [self.ivf_tokens[self.ivf_offsets[c] : self.ivf_offsets[c + 1]] for c in np.asarray(centroids)]
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)


@contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Exclusive right to change the index (other writers, and a reader settling an interrupted update, wait)."""
    # Lock the index folder itself: a lock file would be a stray file in the index, even after a refused update.
    descriptor = os.open(index_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _generation_number(folder: Path) -> int:
    return int(folder.name.split("-")[1])


def _stage(
    index_dir: Path,
    doc_ids: Sequence[str],
    documents: Iterable[np.ndarray],
    centroids: np.ndarray,
    assignments: np.ndarray,
) -> Staged:
    # Numbered past every generation folder there is: one left by an interrupted update (never made live) is
    # skipped, not reused, and the next publish removes it.
    number = max(_generation_number(folder) for folder in Path(index_dir).glob("gen-*")) + 1
    new = Path(index_dir) / f"gen-{number:06d}"
    scratch = Path(index_dir) / f".{new.name}.tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    # The next generation keeps the live one's precision (an index built before int8 existed is float16).
    write_generation(
        scratch, doc_ids, documents, centroids, assignments, stored_precision(current_generation(index_dir))
    )
    scratch.rename(new)
    return Staged(Path(index_dir), new.name)


def publish(staged: Staged) -> int:
    """Make a staged generation live (CURRENT switches with one atomic rename), drop the others and rewrite the
    manifest; returns the new document count. Repeating it after a crash finishes what it began."""
    index_dir = Path(staged.index_dir)
    new = index_dir / staged.generation
    if not (new / "doc_ids.txt").is_file():
        raise BraidError(f"{index_dir} has no staged generation {staged.generation}")
    atomic_write_text(index_dir / "CURRENT", f"{new.name}\n")  # the switch
    for folder in index_dir.glob("gen-*"):
        if folder != new:
            shutil.rmtree(folder, ignore_errors=True)
    doc_ids = _read_ids(new)
    manifest = Manifest.read(index_dir)
    manifest.doc_count = len(doc_ids)
    # The collection is no longer the dataset it was built from: record what it is now, so no build reuses it, and
    # what it was built from, so the shards of a sharded index are still found for that dataset.
    if not manifest.corpus_checksum.startswith("edited:"):
        manifest.build["edited_from"] = manifest.corpus_checksum
    manifest.corpus_checksum = "edited:" + hashlib.sha256("\n".join(sorted(doc_ids)).encode()).hexdigest()
    manifest.files = file_checksums(index_dir)
    atomic_write_text(index_dir / MANIFEST_NAME, json.dumps(asdict(manifest), indent=2, sort_keys=True) + "\n")
    return len(doc_ids)


def discard(staged: Staged) -> None:
    """Remove a staged generation that will not be published (never the live one)."""
    folder = Path(staged.index_dir) / staged.generation
    if folder != current_generation(staged.index_dir):
        shutil.rmtree(folder, ignore_errors=True)


def _read_ids(generation: Path) -> list[str]:
    return [line for line in (generation / "doc_ids.txt").read_text(encoding="utf-8").split("\n") if line]


def live_doc_ids(index_dir: Path) -> list[str]:
    """The ids of the live generation, in index order."""
    settle(Path(index_dir), UPDATES)
    return _read_ids(current_generation(index_dir))


def _documents(store: MultiVectorStore, rows: Iterable[int]) -> Iterator[np.ndarray]:
    """The tokens of ``rows`` (ascending), read sequentially from the live generation rather than through its memory
    map, so that copying an index into its next generation holds a chunk of it, not all of it."""
    wanted = iter(rows)
    following = next(wanted, None)
    for row, tokens in enumerate(store.read_documents()):
        if row == following:
            yield tokens
            following = next(wanted, None)
        if following is None:
            return


def _check_kind(index_dir: Path, action: str) -> Manifest:
    manifest = Manifest.read(index_dir)
    if manifest.kind != "multivector":
        raise BraidError(f"{index_dir} is a {manifest.kind} index; only multivector indexes {action}")
    return manifest


def stage_add(index_dir: Path, documents: Sequence[tuple[str, str]]) -> Staged:
    """Encode, pool and stage ``(doc_id, text)`` documents added to the index (the caller holds the writer lock).

    Refused, with nothing written: an id already indexed or repeated, a document without tokens.
    """
    index_dir = Path(index_dir)
    params = _check_kind(index_dir, "take added documents").params
    ids = [doc_id for doc_id, _ in documents]
    repeated = sorted({doc_id for doc_id in ids if ids.count(doc_id) > 1})
    if repeated:
        raise BraidError(f"document id(s) given more than once: {repeated[:5]}")
    empty = [doc_id for doc_id, text in documents if not has_tokens(text)]
    if empty:
        raise BraidError(f"{len(empty)} document(s) have no tokens after tokenization, e.g. {empty[:5]}; nothing added")
    store = MultiVectorStore(index_dir, settled=True)
    present = sorted(set(ids) & set(store.doc_ids))
    if present:
        raise DocumentsExist(f"{len(present)} document id(s) already in the index, e.g. {present[:5]}; nothing added")
    encoded = encoder_for(params).encode_documents([text for _, text in documents]) if documents else []
    # Round through float16 as a build does (it pools the stored float16 tokens), so an added document is
    # stored exactly as a fresh build would store it.
    encoded = [tokens.astype(np.float16).astype(np.float32) for tokens in encoded]
    pooled = pool_documents(encoded, params, total=len(encoded))
    new_assignments = assign(np.concatenate(pooled), store.centroids) if pooled else np.zeros(0, dtype=np.int32)
    return _stage(
        index_dir,
        [*store.doc_ids, *ids],
        itertools.chain(_documents(store, range(len(store))), pooled),
        store.centroids,
        np.concatenate([store.token_centroid, new_assignments]),
    )


def stage_delete(index_dir: Path, doc_ids: Sequence[str]) -> Staged:
    """Stage the index without ``doc_ids`` (the caller holds the writer lock). Unknown ids are refused."""
    index_dir = Path(index_dir)
    _check_kind(index_dir, "delete documents")
    store = MultiVectorStore(index_dir, settled=True)
    unknown = sorted(set(doc_ids) - set(store.doc_ids))
    if unknown:
        raise UnknownDocuments(f"{len(unknown)} unknown document id(s), e.g. {unknown[:5]}; nothing deleted")
    gone = set(doc_ids)
    keep = [row for row, doc_id in enumerate(store.doc_ids) if doc_id not in gone]
    if not keep:
        raise BraidError("deleting every document would leave an empty index; build a new one instead")
    token_keep = np.isin(store.token_doc, np.asarray(keep, dtype=np.int32))
    return _stage(
        index_dir,
        [store.doc_ids[row] for row in keep],
        _documents(store, keep),
        store.centroids,
        store.token_centroid[token_keep],
    )


UPDATES = Updates(stage_add, stage_delete, publish, discard, live_doc_ids, writer_lock)


KIND = IndexKind(
    "multivector",
    PARAMS,
    build_multivector_index,
    _check,
    requires=requires,
    updates=UPDATES,
    encoded=True,
)
