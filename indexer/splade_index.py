"""SPLADE impact index: quantized learned term weights in a Lucene impact index.

Each document's SPLADE vector is quantized to integers (``round(weight * scale)``; the scale is recorded in
the manifest) and indexed by Anserini as a pre-tokenized impact document: the impact is stored as the term's
frequency, and ImpactSimilarity scores a term as query weight x impact, so a query's score is exactly the dot
product of the quantized query and document vectors.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path

from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError
from braid.indexer.encoder_cache import cached_encoder
from braid.indexer.encoding_memo import memo_encode
from braid.indexer.index_kind import IndexKind, Param, Shards
from braid.indexer.lucene_jvm import index_collection
from braid.indexer.lucene_reader import write_docids
from braid.indexer.params import require_at_least
from braid.indexer.splade_encoder import DEFAULT_MODEL, SpladeEncoder, quantize

# Shared with SLIM, whose encoder reads term weights off the same kind of masked-LM head.
MASKED_LM_PARAMS = {
    "model": Param(DEFAULT_MODEL, "masked-LM checkpoint: embedded name, local folder or hub name"),
    "query_max_length": Param(64, "query tokens kept"),
    "doc_max_length": Param(256, "document tokens kept"),
}
PARAMS = {**MASKED_LM_PARAMS, "scale": Param(100, "weights x scale, rounded, are the impacts")}
IMPACT_DIR = "impact"  # the Lucene impact index inside a splade (or slim) index folder
VECTORS_DIR = "_vectors"  # JSON vectors staged for Anserini during the build, removed after


def _check(merged: dict) -> None:
    require_at_least("splade", merged, ("query_max_length", "doc_max_length", "scale"))


def validate_params(params: dict) -> dict:
    return KIND.validate(params)


def encoder_for(params: dict) -> SpladeEncoder:
    return SpladeEncoder(params["model"], params["query_max_length"], params["doc_max_length"])


def write_impact_index(vectors_dir: Path, out_dir: Path, threads: int | None = None) -> None:
    """Index the JSON vector files in ``vectors_dir`` ({"id", "contents", "vector"}) as a Lucene impact index."""
    args = ["-collection", "JsonVectorCollection", "-input", str(vectors_dir), "-index", str(out_dir)]
    # -optimize merges to one segment: impact queries have hundreds of terms, and each segment repeats the work.
    args += ["-generator", "DefaultLuceneDocumentGenerator", "-impact", "-pretokenized", "-optimize"]
    # -quiet: Anserini logs dozens of INFO lines per build (and resets log4j to do so); progress is braid's.
    args += ["-threads", str(threads or os.cpu_count() or 1), "-quiet"]
    index_collection(args)
    write_docids(out_dir)


def impact_vectors(documents: Iterable[Document], params: dict) -> Iterator[tuple[Document, dict[str, int]]]:
    """Each document with its quantized SPLADE vector (the impacts an index stores), encoded in batches."""
    encoder = cached_encoder(encoder_for, params)
    name = "splade:" + json.dumps(params, sort_keys=True)
    documents = iter(documents)
    while batch := list(islice(documents, 256)):
        texts = [doc.contents for doc in batch]
        weights = memo_encode(name, lambda texts: encoder.encode_documents(texts, progress=False), texts)
        for doc, vector in zip(batch, weights, strict=True):
            yield doc, quantize(vector, params["scale"])


def write_vectors(documents: Iterable[Document], vectors_dir: Path, params: dict, desc: str | None) -> int:
    """Encode ``documents`` as quantized SPLADE vectors in ``vectors_dir/vectors.jsonl`` (Anserini's JSON vectors)."""
    count = 0
    with (
        (vectors_dir / "vectors.jsonl").open("w", encoding="utf-8") as handle,
        tqdm(desc=desc, unit="doc", file=sys.stderr, disable=desc is None) as bar,
    ):
        for doc, impacts in impact_vectors(documents, params):
            handle.write(json.dumps({"id": doc.doc_id, "contents": "", "vector": impacts}) + "\n")
            count += 1
            bar.update(1)
    return count


def impact_index_from(vector_files: Sequence[Path], out_dir: Path, threads: int | None = None) -> None:
    """Index JSON vector files (in order) as ``out_dir/impact``; they are staged inside ``out_dir`` (hard links
    where the filesystem allows), so a killed build leaves nothing outside its own folder."""
    staging = out_dir / VECTORS_DIR
    staging.mkdir()
    for number, path in enumerate(vector_files):
        target = staging / f"{number:05d}.jsonl"
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    write_impact_index(staging, out_dir / IMPACT_DIR, threads)
    shutil.rmtree(staging)


def build_splade_index(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    params = validate_params(params)
    # Vectors are staged inside the build folder, so a killed build leaves nothing outside it.
    vectors_dir = out_dir / VECTORS_DIR
    vectors_dir.mkdir()
    count = write_vectors(dataset.iter_corpus(), vectors_dir, params, f"encode splade {dataset.name}")
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents to index")
    write_impact_index(vectors_dir, out_dir / IMPACT_DIR, threads)
    shutil.rmtree(vectors_dir)
    return count


def encode_shard(documents: Sequence[Document], out_dir: Path, params: dict) -> int:
    return write_vectors(documents, out_dir, params, None)


def assemble_shards(shards: Sequence[Path], out_dir: Path, params: dict, threads: int | None = None) -> int:
    """One impact index over every shard's vectors."""
    files = [shard / "vectors.jsonl" for shard in shards]
    count = sum(sum(1 for _ in path.open(encoding="utf-8")) for path in files)
    if count == 0:
        raise BraidError("the shards hold no documents")
    impact_index_from(files, out_dir, threads)
    return count


KIND = IndexKind(
    "splade", PARAMS, build_splade_index, _check, shards=Shards(encode_shard, assemble_shards), encoded=True
)
