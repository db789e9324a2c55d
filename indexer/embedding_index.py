"""Stored document embeddings: computed once per (collection, encoder), memory-mapped by every consumer.

Layout: ``embeddings.f16`` (documents x dimension, float16, row-major, no header), ``doc_ids.txt`` (one id per
row) and ``embeddings.json`` (dimension, count, dtype). float16 halves the bytes of float32 with a relative
error near 1e-3, far below what changes a ranking; exact search and rescoring read these rows directly.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from eval.dataset import Dataset
from eval.errors import BraidError
from indexer.dense_encoder import DEFAULT_MODEL, DenseEncoder
from indexer.params import merge_params, require_at_least

DEFAULT_PARAMS = {"model": DEFAULT_MODEL, "max_length": 256}
EMBEDDINGS_NAME = "embeddings.f16"


def validate_params(params: dict) -> dict:
    merged = merge_params("embeddings", params, DEFAULT_PARAMS)
    require_at_least("embeddings", merged, ("max_length",))
    return merged


def encoder_for(params: dict) -> DenseEncoder:
    return DenseEncoder(params["model"], params["max_length"])


def build_embeddings(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    params = validate_params(params)
    encoder = encoder_for(params)
    count = 0
    documents = dataset.iter_corpus()
    with (
        (out_dir / EMBEDDINGS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
        tqdm(desc=f"encode dense {dataset.name}", unit="doc", file=sys.stderr) as bar,
    ):
        while batch := list(islice(documents, 512)):
            matrix.write(encoder.encode([doc.contents for doc in batch]).astype(np.float16).tobytes())
            doc_ids.writelines(doc.doc_id + "\n" for doc in batch)
            count += len(batch)
            bar.update(len(batch))
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents to index")
    meta = {"documents": count, "dimension": encoder.dimension, "dtype": "float16"}
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
