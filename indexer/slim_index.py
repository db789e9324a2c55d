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
from itertools import islice
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from eval.dataset import Dataset
from eval.errors import BraidError
from indexer.params import merge_params, require_at_least
from indexer.slim_encoder import SlimEncoder
from indexer.splade_encoder import DEFAULT_MODEL, quantize
from indexer.splade_index import IMPACT_DIR, VECTORS_DIR, write_impact_index

DEFAULT_PARAMS = {
    "model": DEFAULT_MODEL,
    "query_max_length": 64,
    "doc_max_length": 256,
    "top_k_terms": 20,
    "scale": 100,
}
TOKENS_DIR = "slim_tokens"
# file name -> dtype of the flat arrays that make up the token CSR store
TOKEN_ARRAYS = {"indptr": np.int64, "indices": np.int32, "values": np.float16, "doc_offsets": np.int64}


def validate_params(params: dict) -> dict:
    merged = merge_params("slim", params, DEFAULT_PARAMS)
    require_at_least("slim", merged, ("query_max_length", "doc_max_length", "top_k_terms", "scale"))
    return merged


def encoder_for(params: dict) -> SlimEncoder:
    return SlimEncoder(params["model"], params["top_k_terms"])


def pooled_terms(matrix: sp.csr_matrix, vocab: list[str], how: str) -> dict[str, float]:
    """Max-pool (documents) or sum (queries) a token matrix into one ``{term: weight}`` vector."""
    if matrix.shape[0] == 0:
        return {}
    pooled = matrix.max(axis=0).toarray().ravel() if how == "max" else np.asarray(matrix.sum(axis=0)).ravel()
    return {vocab[column]: float(pooled[column]) for column in np.flatnonzero(pooled > 0)}


def build_slim_index(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    params = validate_params(params)
    encoder = encoder_for(params)
    tokens_dir = out_dir / TOKENS_DIR
    tokens_dir.mkdir()
    files = {name: (tokens_dir / f"{name}.bin").open("wb") for name in TOKEN_ARRAYS}
    files["indptr"].write(np.zeros(1, dtype=np.int64).tobytes())
    files["doc_offsets"].write(np.zeros(1, dtype=np.int64).tobytes())
    entries = rows = count = 0
    vectors_dir = out_dir / VECTORS_DIR
    vectors_dir.mkdir()
    try:
        documents = dataset.iter_corpus()
        with (
            (vectors_dir / "vectors.jsonl").open("w", encoding="utf-8") as vectors,
            (tokens_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
            tqdm(desc=f"encode slim {dataset.name}", unit="doc", file=sys.stderr) as bar,
        ):
            while batch := list(islice(documents, 64)):
                matrices = encoder.encode([doc.contents for doc in batch], params["doc_max_length"])
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
        for handle in files.values():
            handle.close()
        if count == 0:
            raise BraidError(f"dataset {dataset.name!r} has no documents to index")
        meta = {"documents": count, "token_rows": rows, "entries": entries, "vocab_size": encoder.vocab_size}
        (tokens_dir / "meta.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
        write_impact_index(vectors_dir, out_dir / IMPACT_DIR, threads)
        shutil.rmtree(vectors_dir)
    finally:
        for handle in files.values():
            handle.close()
    return count
