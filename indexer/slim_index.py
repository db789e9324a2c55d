"""SLIM index: an impact index of pooled document vectors for candidates, and the token vectors for refinement.

Because SLIM weights are non-negative, sum_i max_j q_i . d_j <= (sum_i q_i) . (max_j d_j): the dot product of
the query's summed token vector with the document's element-wise max-pooled token vector bounds the late
interaction score. The pooled vectors go into a Lucene impact index (quantized like SPLADE) to produce
candidates; the token vectors themselves are stored once, in CSR form, as flat binary arrays that searchers
memory-map (term ids int32, weights float16), for exact refinement of the candidates.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.encoding_memo import memo_encode
from braid.indexer.index_kind import IndexKind, Param, Shards
from braid.indexer.params import require_at_least
from braid.indexer.slim_encoder import SlimEncoder
from braid.indexer.splade_encoder import quantize
from braid.indexer.splade_index import (
    IMPACT_DIR,
    MASKED_LM_PARAMS,
    VECTORS_DIR,
    impact_index_from,
    write_impact_index,
)

PARAMS = {
    **MASKED_LM_PARAMS,
    "top_k_terms": Param(20, "vocabulary terms kept per token"),
    "scale": Param(100, "first-stage weights x scale, rounded, are the impacts"),
}
TOKENS_DIR = "slim_tokens"
# file name -> dtype of the flat arrays that make up the token CSR store
TOKEN_ARRAYS = {"indptr": np.int64, "indices": np.int32, "values": np.float16, "doc_offsets": np.int64}


def _check(merged: dict) -> None:
    require_at_least("slim", merged, ("query_max_length", "doc_max_length", "top_k_terms", "scale"))


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def encoder_for(params: dict) -> SlimEncoder:
    return SlimEncoder(params["model"], params["top_k_terms"])


def pooled_terms(matrix: sp.csr_matrix, vocab: list[str], how: str) -> dict[str, float]:
    """Max-pool (documents) or sum (queries) a token matrix into one ``{term: weight}`` vector."""
    if matrix.shape[0] == 0:
        return {}
    pooled = matrix.max(axis=0).toarray().ravel() if how == "max" else np.asarray(matrix.sum(axis=0)).ravel()
    return {vocab[column]: float(pooled[column]) for column in np.flatnonzero(pooled > 0)}


def write_slim(documents: Iterable[Document], out_dir: Path, params: dict, desc: str | None) -> int:
    """Encode ``documents``: max-pooled vectors for the impact index in ``out_dir/_vectors`` and the token-level
    CSR arrays in ``out_dir/slim_tokens`` (a build, or one shard of a build job)."""
    encoder = cached_encoder(encoder_for, params)
    name = "slim:" + json.dumps(params, sort_keys=True)
    tokens_dir = out_dir / TOKENS_DIR
    tokens_dir.mkdir()
    vectors_dir = out_dir / VECTORS_DIR
    vectors_dir.mkdir()
    files = {name: (tokens_dir / f"{name}.bin").open("wb") for name in TOKEN_ARRAYS}
    files["indptr"].write(np.zeros(1, dtype=np.int64).tobytes())
    files["doc_offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
    entries = rows = count = 0
    try:
        documents = iter(documents)
        with (
            (vectors_dir / "vectors.jsonl").open("w", encoding="utf-8") as vectors,
            (tokens_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
            tqdm(desc=desc, unit="doc", file=sys.stderr, disable=desc is None) as bar,
        ):
            while batch := list(islice(documents, 64)):
                texts = [doc.contents for doc in batch]
                matrices = memo_encode(name, lambda texts: encoder.encode(texts, params["doc_max_length"]), texts)
                for doc, matrix in zip(batch, matrices, strict=True):
                    pooled = quantize(pooled_terms(matrix, encoder.vocab, "max"), params["scale"])
                    vectors.write(json.dumps({"id": doc.doc_id, "contents": "", "vector": pooled}) + "\n")
                    doc_ids.write(doc.doc_id + "\n")
                    files["indices"].write(matrix.indices.astype(np.int32).tobytes())
                    files["values"].write(matrix.data.astype(np.float16).tobytes())
                    files["indptr"].write((matrix.indptr[1:].astype(np.int64) + entries).tobytes())
                    entries += matrix.nnz
                    rows += matrix.shape[0]
                    files["doc_offsets"].write(np.array([rows], dtype=np.int64).tobytes())
                count += len(batch)
                bar.update(len(batch))
    finally:
        for handle in files.values():
            handle.close()
    meta = {"documents": count, "token_rows": rows, "entries": entries, "vocab_size": encoder.vocab_size}
    (tokens_dir / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


def build_slim_index(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    params = validate_params(params)
    count = write_slim(dataset.iter_corpus(), out_dir, params, f"encode slim {dataset.name}")
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents to index")
    write_impact_index(out_dir / VECTORS_DIR, out_dir / IMPACT_DIR, threads)
    shutil.rmtree(out_dir / VECTORS_DIR)
    return count


def encode_shard(documents: Sequence[Document], out_dir: Path, params: dict) -> int:
    return write_slim(documents, out_dir, params, None)


def assemble_shards(shards: Sequence[Path], out_dir: Path, params: dict, threads: int | None = None) -> int:
    """Concatenate the shards' token arrays (row pointers and document offsets shifted) and index every shard's
    pooled vectors in one impact index."""
    tokens_dir = out_dir / TOKENS_DIR
    tokens_dir.mkdir()
    total = {"documents": 0, "token_rows": 0, "entries": 0, "vocab_size": None}
    files = {name: (tokens_dir / f"{name}.bin").open("wb") for name in TOKEN_ARRAYS}
    try:
        files["indptr"].write(np.zeros(1, dtype=np.int64).tobytes())
        files["doc_offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
        with (tokens_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids:
            for shard in shards:
                part = shard / TOKENS_DIR
                meta = json.loads((part / "meta.json").read_text(encoding="utf-8"))
                for name in ("indices", "values"):
                    with (part / f"{name}.bin").open("rb") as handle:
                        shutil.copyfileobj(handle, files[name], 1 << 20)
                indptr = np.fromfile(part / "indptr.bin", dtype=np.int64)[1:] + total["entries"]
                files["indptr"].write(indptr.tobytes())
                offsets = np.fromfile(part / "doc_offsets.bin", dtype=np.int64)[1:] + total["token_rows"]
                files["doc_offsets"].write(offsets.tobytes())
                doc_ids.write((part / "doc_ids.txt").read_text(encoding="utf-8"))
                for key in ("documents", "token_rows", "entries"):
                    total[key] += int(meta[key])
                total["vocab_size"] = meta["vocab_size"]
    finally:
        for handle in files.values():
            handle.close()
    if total["documents"] == 0:
        raise BraidError("the shards hold no documents")
    (tokens_dir / "meta.json").write_text(json.dumps(total) + "\n", encoding="utf-8")
    impact_index_from([shard / VECTORS_DIR / "vectors.jsonl" for shard in shards], out_dir, threads)
    return total["documents"]


KIND = IndexKind("slim", PARAMS, build_slim_index, _check, shards=Shards(encode_shard, assemble_shards))
