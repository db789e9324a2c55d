"""Stored token embeddings: every document's token vectors, computed once per (collection, encoder) and
memory-mapped by every multi-vector index built from them (one per pool factor).

Layout: ``tokens.f16`` (all tokens x dimension, float16, documents back to back), ``doc_offsets.i64`` (documents
+ 1 row offsets), ``doc_ids.txt`` and ``tokens.json``. Documents with no token after tokenization (empty or
whitespace-only text) cannot be scored by MaxSim; they are left out and listed in ``tokens.json``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.encoding_memo import memo_encode
from braid.indexer.index_kind import IndexKind, Param, Shards
from braid.indexer.params import require_at_least
from braid.indexer.token_encoder import DEFAULT_MODEL, TokenEncoder
from braid.indexer.token_precision import (
    FLOAT16_TOKENS,
    INT8_SCALES,
    INT8_TOKENS,
    dequantize,
    open_rows,
    stored_precision,
)

PARAMS = {
    "model": Param(DEFAULT_MODEL, "token encoder: ColBERT checkpoint or plain encoder"),
    "doc_max_length": Param(256, "document tokens kept"),
    "query_max_length": Param(32, "query tokens kept"),
}
TOKENS_NAME = FLOAT16_TOKENS


def _check(merged: dict) -> None:
    require_at_least("tokens", merged, ("doc_max_length", "query_max_length"))


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def encoder_for(params: dict) -> TokenEncoder:
    return TokenEncoder(params["model"], params["doc_max_length"], params["query_max_length"])


def has_tokens(text: str) -> bool:
    return bool(text.strip())


def write_tokens(documents: Iterable[Document], out_dir: Path, params: dict, desc: str | None) -> int:
    """Encode ``documents`` into ``out_dir`` in the tokens layout (a build, or one shard of a build job)."""
    encoder = cached_encoder(encoder_for, params)
    name = "tokens:" + json.dumps(params, sort_keys=True)
    offsets, skipped, count = [0], [], 0
    documents = iter(documents)
    with (
        (out_dir / TOKENS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
        tqdm(desc=desc, unit="doc", file=sys.stderr, disable=desc is None) as bar,
    ):
        while batch := list(islice(documents, 256)):
            kept = [doc for doc in batch if has_tokens(doc.contents)]
            skipped += [doc.doc_id for doc in batch if not has_tokens(doc.contents)]
            encoded = memo_encode(name, encoder.encode_documents, [doc.contents for doc in kept])
            for doc, tokens in zip(kept, encoded, strict=True):
                matrix.write(tokens.astype(np.float16).tobytes())
                offsets.append(offsets[-1] + len(tokens))
                doc_ids.write(doc.doc_id + "\n")
            count += len(kept)
            bar.update(len(batch))
    if skipped:
        print(f"warning: {len(skipped)} document(s) without tokens left out, e.g. {skipped[:5]}", file=sys.stderr)
    np.asarray(offsets, dtype=np.int64).tofile(out_dir / "doc_offsets.i64")
    meta = {"documents": count, "dimension": encoder.dimension, "tokens": offsets[-1], "skipped": skipped}
    (out_dir / "tokens.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


def build_tokens(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    count = write_tokens(dataset.iter_corpus(), out_dir, validate_params(params), f"encode tokens {dataset.name}")
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents with tokens to index")
    return count


def encode_shard(documents: Sequence[Document], out_dir: Path, params: dict) -> int:
    return write_tokens(documents, out_dir, params, None)


def assemble_shards(shards: Sequence[Path], out_dir: Path, params: dict, threads: int | None = None) -> int:
    """Concatenate encoded shards, in order, into one tokens index (offsets shifted, skipped ids kept)."""
    offsets, skipped, count, dimension = [np.zeros(1, dtype=np.int64)], [], 0, None
    with (
        (out_dir / TOKENS_NAME).open("wb") as matrix,
        (out_dir / "doc_ids.txt").open("w", encoding="utf-8") as doc_ids,
    ):
        for shard in shards:
            meta = json.loads((shard / "tokens.json").read_text(encoding="utf-8"))
            dimension = meta["dimension"]
            with (shard / TOKENS_NAME).open("rb") as part:
                shutil.copyfileobj(part, matrix, 1 << 20)
            doc_ids.write((shard / "doc_ids.txt").read_text(encoding="utf-8"))
            offsets.append(np.fromfile(shard / "doc_offsets.i64", dtype=np.int64)[1:] + offsets[-1][-1])
            skipped += meta["skipped"]
            count += int(meta["documents"])
    if count == 0:
        raise BraidError("the shards hold no documents with tokens")
    merged = np.concatenate(offsets)
    merged.tofile(out_dir / "doc_offsets.i64")
    meta = {"documents": count, "dimension": dimension, "tokens": int(merged[-1]), "skipped": skipped}
    (out_dir / "tokens.json").write_text(json.dumps(meta) + "\n", encoding="utf-8")
    return count


def read_documents(
    folder: Path, offsets: np.ndarray, dimension: int, chunk_tokens: int = 1 << 16
) -> Iterator[np.ndarray]:
    """Every document's token vectors in order (float16 as stored, or int8 read back as float32), read through a
    file handle a chunk of documents at a time.

    A build that walks a whole token file through a memory map keeps every page it touched resident (and counted in
    its RSS) until the kernel needs them back; plain reads hold one chunk."""
    folder = Path(folder)
    int8 = stored_precision(folder) == "int8"
    name, dtype = (INT8_TOKENS, np.int8) if int8 else (TOKENS_NAME, np.float16)
    with (folder / name).open("rb") as handle, contextlib.ExitStack() as stack:
        scales = stack.enter_context((folder / INT8_SCALES).open("rb")) if int8 else None
        first = 0
        while first < len(offsets) - 1:
            # Documents up to ~chunk_tokens tokens (at least one), read in one call.
            last = int(np.searchsorted(offsets, offsets[first] + chunk_tokens, side="right")) - 1
            last = min(max(last, first + 1), len(offsets) - 1)
            rows = int(offsets[last] - offsets[first])
            chunk = np.fromfile(handle, dtype=dtype, count=rows * dimension).reshape(-1, dimension)
            if scales is not None:
                chunk = dequantize(chunk, np.fromfile(scales, dtype=np.float32, count=rows))
            for row in range(first, last):
                yield chunk[offsets[row] - offsets[first] : offsets[row + 1] - offsets[first]]
            first = last


class TokenStore:
    """Read-only, memory-mapped token embeddings of a collection (a tokens index or a multi-vector generation)."""

    def __init__(self, folder: Path, meta_name: str = "tokens.json") -> None:
        self.folder = folder = Path(folder)
        meta = json.loads((folder / meta_name).read_text(encoding="utf-8"))
        self.dimension = int(meta["dimension"])
        self.offsets = np.fromfile(folder / "doc_offsets.i64", dtype=np.int64)
        self.doc_ids = (folder / "doc_ids.txt").read_text(encoding="utf-8").split("\n")[: int(meta["documents"])]
        # float16 rows, or int8 codes with ``scales`` (one per row; None for float16): braid.indexer.token_precision
        self.matrix, self.scales = open_rows(folder, self.dimension)

    def __len__(self) -> int:
        return len(self.doc_ids)

    def document(self, row: int) -> np.ndarray:
        start, end = self.offsets[row], self.offsets[row + 1]
        if self.scales is None:
            return self.matrix[start:end]
        return dequantize(self.matrix[start:end], self.scales[start:end])

    def read_documents(self) -> Iterator[np.ndarray]:
        """Every document's tokens in order, read sequentially (:func:`read_documents`), for builds."""
        return read_documents(self.folder, self.offsets, self.dimension)


KIND = IndexKind("tokens", PARAMS, build_tokens, _check, shards=Shards(encode_shard, assemble_shards), encoded=True)
