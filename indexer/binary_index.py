"""Binary index: BEBR codes of the collection's embeddings, a faiss binary index for candidates, and the
binarizer that produced them (queries must be coded by the same model).

Files: ``codes.u8`` (documents x planes x width/8, uint8), ``faiss.index`` (IndexBinaryFlat, IVF or HNSW over
the leading ``candidate_planes`` planes), ``binarizer.pt`` + ``binarizer.json`` (recurrent method), ``binary.json``.
The float embeddings stay in the embeddings index this one depends on (the manifest records it) and serve rescoring.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import faiss
import numpy as np

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.indexer.binary_codes import RecurrentCoder, SignCoder
from braid.indexer.embedding_index import EMBEDDINGS_NAME, EmbeddingStore
from braid.indexer.embedding_index import PARAMS as EMBEDDING_PARAMS
from braid.indexer.index_kind import IndexKind, Param
from braid.indexer.matrix_file import gather_rows, read_blocks
from braid.indexer.params import require_at_least, require_choice
from braid.indexer.recurrent_binarizer import load_binarizer, save_binarizer, train_binarizer

METHODS = ("recurrent", "sign")
# Embeddings the binarizer trains on at most (100 MB of 384-dimensional float32 vectors; 20 epochs over them).
TRAINING_LIMIT = 1 << 16
FAISS_INDEXES = ("flat", "ivf", "hnsw")
# The embeddings this index codes are built with the same model and length (their own parameters).
PARAMS = {
    **EMBEDDING_PARAMS,
    "method": Param("recurrent", "recurrent (BEBR) or sign"),
    "bits": Param(1, "bit planes per dimension, 1..4"),
    "width": Param(0, "code width in bits per plane; 0 = embedding dimension"),
    "faiss": Param("flat", "candidate index: flat, ivf or hnsw"),
    # Plane 0 alone ranks candidates much like the full SDC; Hamming over all planes weighs the small residual
    # planes like the first and, on scifact at 4 bits, lost relevant documents (rescored nDCG@10 0.637 vs 0.645).
    "candidate_planes": Param(1, "leading bit planes the candidate index covers"),
    "nlist": Param(0, "IVF lists; 0 = about 4 sqrt(n)"),
    "hnsw_m": Param(32, "HNSW neighbours per node"),
    "epochs": Param(20, "binarizer training epochs"),
    "seed": Param(0, "training seed"),
}


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def _check(merged: dict) -> None:
    require_choice("binary", merged, "method", METHODS)
    require_choice("binary", merged, "faiss", FAISS_INDEXES)
    require_at_least("binary", merged, ("width", "nlist", "epochs", "seed"), minimum=0)
    require_at_least("binary", merged, ("max_length", "candidate_planes", "hnsw_m"))
    if not 1 <= merged["bits"] <= 4:
        raise BraidError(f"binary bits must be 1..4 bits per dimension, got {merged['bits']}")
    if merged["candidate_planes"] > merged["bits"]:
        raise BraidError(
            f"binary candidate_planes must be 1..bits ({merged['bits']}), got {merged['candidate_planes']}"
        )
    if merged["width"] % 8:
        raise BraidError(f"binary width must be a multiple of 8, got {merged['width']}")
    if merged["method"] == "sign" and (merged["bits"] != 1 or merged["width"] != 0):
        raise BraidError("binary method 'sign' codes 1 bit per embedding dimension: leave bits = 1 and width = 0")


def requires(params: dict) -> dict[str, tuple[str, dict]]:
    return {"embeddings": ("embeddings", {name: params[name] for name in EMBEDDING_PARAMS})}


def build_binary_index(
    dataset: Dataset,
    out_dir: Path,
    params: dict,
    threads: int | None = None,
    *,
    embeddings: Path,
    trained: Path | None = None,
) -> int:
    """Code the embeddings; ``trained``: a binary index of the whole collection whose binarizer codes this one (a
    shard of it), so that codes compare across shards."""
    params = validate_params(params)
    store = EmbeddingStore(embeddings)
    matrix = embeddings / EMBEDDINGS_NAME
    if params["method"] == "sign":
        coder = SignCoder(store.dimension)
    else:
        if trained is not None:
            model = load_binarizer(trained)
        else:
            width = params["width"] or store.dimension
            sample = training_sample(matrix, store.dimension, len(store.doc_ids), params["seed"])
            model = train_binarizer(sample, width, params["bits"], epochs=params["epochs"], seed=params["seed"])
            del sample
        save_binarizer(model, out_dir)
        coder = RecurrentCoder(model)
    # The float vectors are read and coded a block at a time; the codes (planes x width / 8 bytes a document) are
    # what the faiss index holds in memory anyway.
    blocks = [coder.encode(rows.astype(np.float32))[0] for _, rows in read_blocks(matrix, np.float16, store.dimension)]
    codes = np.concatenate(blocks) if blocks else np.zeros((0, 1, coder.width // 8), dtype=np.uint8)
    del blocks
    codes.tofile(out_dir / "codes.u8")
    candidates = make_faiss_index(codes[:, : params["candidate_planes"]], params)
    faiss.write_index_binary(candidates, str(out_dir / "faiss.index"))
    meta = {"documents": len(codes), "planes": codes.shape[1], "width": coder.width, "scales": coder.scales.tolist()}
    (out_dir / "binary.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return len(codes)


def training_sample(matrix: Path, dimension: int, documents: int, seed: int) -> np.ndarray:
    """The embeddings the binarizer trains on: all of them up to :data:`TRAINING_LIMIT`, else that many drawn at
    random (seeded), so a build's memory and training time stop growing with the collection."""
    if documents <= TRAINING_LIMIT:
        vectors = np.fromfile(matrix, dtype=np.float16, count=documents * dimension)
        return vectors.reshape(-1, dimension).astype(np.float32)
    rows = np.random.default_rng(seed).choice(documents, size=TRAINING_LIMIT, replace=False)
    return gather_rows(matrix, np.float16, dimension, np.sort(rows)).astype(np.float32)


def make_faiss_index(codes: np.ndarray, params: dict):
    """A faiss binary index over the given planes, concatenated (Hamming over their bits), for candidates."""
    flat = np.ascontiguousarray(codes.reshape(codes.shape[0], -1))
    bits = flat.shape[1] * 8
    if params["faiss"] == "flat":
        index = faiss.IndexBinaryFlat(bits)
    elif params["faiss"] == "hnsw":
        index = faiss.IndexBinaryHNSW(bits, params["hnsw_m"])
    else:
        nlist = params["nlist"] or max(1, min(len(flat) // 39, int(4 * math.sqrt(len(flat)))))
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(bits), bits, nlist)
        index.train(flat)
    index.add(flat)
    return index


def load_coder(index_dir: Path, params: dict, dim: int):
    return SignCoder(dim) if params["method"] == "sign" else RecurrentCoder(load_binarizer(index_dir))


def load_codes(index_dir: Path) -> tuple[np.ndarray, dict]:
    meta = json.loads((index_dir / "binary.json").read_text(encoding="utf-8"))
    shape = (meta["documents"], meta["planes"], meta["width"] // 8)
    codes = np.fromfile(index_dir / "codes.u8", dtype=np.uint8).reshape(shape)
    return codes, meta


KIND = IndexKind("binary", PARAMS, build_binary_index, _check, requires=requires, encoded=True)
