"""Stored token embeddings: every document's token vectors, computed once per (collection, encoder) and
memory-mapped by every multi-vector index built from them (one per pool factor).

Layout: ``tokens.f16`` (all tokens x dimension, float16, documents back to back), ``doc_offsets.i64`` (documents
+ 1 row offsets), ``doc_ids.txt`` and ``tokens.json``. Documents with no token after tokenization (empty or
whitespace-only text) cannot be scored by MaxSim; they are left out and listed in ``tokens.json``.
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
from indexer.params import merge_params, require_at_least
from indexer.token_encoder import DEFAULT_MODEL, TokenEncoder

DEFAULT_PARAMS = {"model": DEFAULT_MODEL, "doc_max_length": 256, "query_max_length": 32}
TOKENS_NAME = "tokens.f16"


def validate_params(params: dict) -> dict:
    merged = merge_params("tokens", params, DEFAULT_PARAMS)
    require_at_least("tokens", merged, ("doc_max_length", "query_max_length"))
    return merged


def encoder_for(params: dict) -> TokenEncoder:
    return TokenEncoder(params["model"], params["doc_max_length"], params["query_max_length"])


def has_tokens(text: str) -> bool:
    return bool(text.strip())


def build_tokens(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    params = validate_params(params)
    encoder = encoder_for(params)
    offsets, skipped, count = [0], [], 0
    documents = dataset.iter_corpus()
    with (
        (out_dir / TOKENS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
        tqdm(desc=f"encode tokens {dataset.name}", unit="doc", file=sys.stderr) as bar,
    ):
        while batch := list(islice(documents, 256)):
            kept = [doc for doc in batch if has_tokens(doc.contents)]
            skipped += [doc.doc_id for doc in batch if not has_tokens(doc.contents)]
            for doc, tokens in zip(kept, encoder.encode_documents([doc.contents for doc in kept]), strict=True):
                matrix.write(tokens.astype(np.float16).tobytes())
                offsets.append(offsets[-1] + len(tokens))
                doc_ids.write(doc.doc_id + "\n")
            count += len(kept)
            bar.update(len(batch))
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents with tokens to index")
    if skipped:
        print(f"warning: {len(skipped)} document(s) without tokens left out, e.g. {skipped[:5]}", file=sys.stderr)
    np.asarray(offsets, dtype=np.int64).tofile(out_dir / "doc_offsets.i64")
    meta = {"documents": count, "dimension": encoder.dimension, "tokens": offsets[-1], "skipped": skipped}
    (out_dir / "tokens.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


class TokenStore:
    """Read-only, memory-mapped token embeddings of a collection (a tokens index or a multi-vector generation)."""

    def __init__(self, folder: Path, meta_name: str = "tokens.json") -> None:
        folder = Path(folder)
        meta = json.loads((folder / meta_name).read_text(encoding="utf-8"))
        self.dimension = int(meta["dimension"])
        self.offsets = np.fromfile(folder / "doc_offsets.i64", dtype=np.int64)
        self.doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[: int(meta["documents"])]
        size = (folder / TOKENS_NAME).stat().st_size
        self.matrix = (
            np.memmap(folder / TOKENS_NAME, dtype=np.float16, mode="r").reshape(-1, self.dimension)
            if size
            else np.zeros((0, self.dimension), dtype=np.float16)
        )

    def __len__(self) -> int:
        return len(self.doc_ids)

    def document(self, row: int) -> np.ndarray:
        return self.matrix[self.offsets[row] : self.offsets[row + 1]]
