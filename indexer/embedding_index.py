"""Stored document embeddings: computed once per (collection, encoder), memory-mapped by every consumer.

Layout: ``embeddings.f16`` (documents x dimension, float16, row-major, no header), ``doc_ids.txt`` (one id per
row) and ``embeddings.json`` (dimension, count, dtype). float16 halves the bytes of float32 with a relative
error near 1e-3, far below what changes a ranking; exact search and rescoring read these rows directly.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError
from braid.indexer.dense_encoder import DEFAULT_MODEL, DenseEncoder
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.encoding_memo import memo_encode
from braid.indexer.index_kind import IndexKind, Param, Shards
from braid.indexer.params import require_at_least

PARAMS = {
    "model": Param(DEFAULT_MODEL, "sentence-transformers checkpoint: embedded name, folder or hub name"),
    "max_length": Param(256, "tokens kept per text"),
}
EMBEDDINGS_NAME = "embeddings.f16"


def _check(merged: dict) -> None:
    require_at_least("embeddings", merged, ("max_length",))


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def encoder_for(params: dict) -> DenseEncoder:
    return DenseEncoder(params["model"], params["max_length"])


def write_embeddings(documents: Iterable[Document], out_dir: Path, params: dict, desc: str | None) -> int:
    """Encode ``documents`` into ``out_dir`` in the embeddings layout (a build, or one shard of a build job)."""
    encoder = cached_encoder(encoder_for, params)
    name = "embeddings:" + json.dumps(params, sort_keys=True)
    count = 0
    documents = iter(documents)
    with (
        (out_dir / EMBEDDINGS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
        tqdm(desc=desc, unit="doc", file=sys.stderr, disable=desc is None) as bar,
    ):
        while batch := list(islice(documents, 512)):
            vectors = memo_encode(name, encoder.encode, [doc.contents for doc in batch])
            matrix.write(np.asarray(vectors).astype(np.float16).tobytes())
            doc_ids.writelines(doc.doc_id + "\n" for doc in batch)
            count += len(batch)
            bar.update(len(batch))
    meta = {"documents": count, "dimension": encoder.dimension, "dtype": "float16"}
    (out_dir / "embeddings.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


def build_embeddings(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    count = write_embeddings(dataset.iter_corpus(), out_dir, validate_params(params), f"encode dense {dataset.name}")
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents to index")
    return count


def encode_shard(documents: Sequence[Document], out_dir: Path, params: dict) -> int:
    return write_embeddings(documents, out_dir, params, None)


def assemble_shards(shards: Sequence[Path], out_dir: Path, params: dict, threads: int | None = None) -> int:
    """Concatenate encoded shards, in order, into one embeddings index."""
    count, dimension = 0, None
    with (
        (out_dir / EMBEDDINGS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
    ):
        for shard in shards:
            meta = json.loads((shard / "embeddings.json").read_text(encoding="utf-8"))
            dimension = meta["dimension"]
            with (shard / EMBEDDINGS_NAME).open("rb") as part:
                shutil.copyfileobj(part, matrix, 1 << 20)
            doc_ids.write((shard / "doc_ids.txt").read_text(encoding="utf-8"))
            count += int(meta["documents"])
    if count == 0:
        raise BraidError("the shards hold no documents")
    meta = {"documents": count, "dimension": dimension, "dtype": "float16"}
    (out_dir / "embeddings.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


class EmbeddingStore:
    """Read-only, memory-mapped view of a built embeddings index."""

    def __init__(self, index_dir: Path) -> None:
        index_dir = Path(index_dir)
        meta = json.loads((index_dir / "embeddings.json").read_text(encoding="utf-8"))
        self.dimension = int(meta["dimension"])
        self.matrix = np.memmap(index_dir / EMBEDDINGS_NAME, dtype=np.float16, mode="r").reshape(-1, self.dimension)
        self.doc_ids = (index_dir / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[: meta["documents"]]


KIND = IndexKind(
    "embeddings", PARAMS, build_embeddings, _check, shards=Shards(encode_shard, assemble_shards), encoded=True
)
