"""BM25 index: a Lucene inverted index built through pyserini/Anserini.

Documents are indexed as ``title + " " + text`` with Lucene's English analyzer (Porter stemming and the
default stopword list unless told otherwise), positions and document vectors stored, and the raw JSON kept
so that search results can show the text. This is the configuration of Pyserini's BEIR "flat" indexes,
whose published BM25 figures braid reproduces. BM25's k1 and b are search-time parameters.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from braid.common.dataset import Dataset, Document
from braid.common.errors import BraidError
from braid.indexer.index_kind import IndexKind, Param, Shards
from braid.indexer.lucene_jvm import index_collection
from braid.indexer.lucene_reader import write_docids
from braid.indexer.params import require_choice

STEMMERS = ("porter", "krovetz", "none")
DOCS_STAGING = "staging-docs"  # the documents as IndexCollection reads them, inside the index folder while it builds
PARAMS = {
    "stemmer": Param("porter", "Lucene stemmer: porter, krovetz or none"),
    "keep_stopwords": Param(False, "index stopwords instead of dropping them"),
}


def _check(merged: dict) -> None:
    require_choice("bm25", merged, "stemmer", STEMMERS)


def validate_params(params: dict) -> dict:
    """Fill defaults and reject unknown or ill-typed parameters with the allowed values named."""
    return KIND.validate(params)


def write_lucene_index(
    documents: Iterable[Document], out_dir: Path, params: dict, threads: int | None = None, desc: str = "bm25"
) -> int:
    """Index ``documents`` into ``out_dir`` (which must be empty) and return how many were indexed.

    The documents are staged as one JSON-lines file inside ``out_dir`` and indexed by Anserini's IndexCollection (how
    Pyserini builds its BEIR "flat" indexes), which flushes Lucene segments from a bounded buffer; one file is read
    by one thread, so documents get Lucene numbers in the order given."""
    params = validate_params(params)
    staging = out_dir / DOCS_STAGING
    staging.mkdir()
    count = 0
    with (
        (staging / "docs.jsonl").open("w", encoding="utf-8") as handle,
        tqdm(desc=f"index {desc}", unit="doc", file=sys.stderr) as bar,
    ):
        for doc in documents:
            handle.write(json.dumps({"id": doc.doc_id, "contents": doc.contents}) + "\n")
            count += 1
            bar.update(1)
    args = ["-collection", "JsonCollection", "-input", str(staging), "-index", str(out_dir)]
    args += ["-generator", "DefaultLuceneDocumentGenerator", "-storePositions", "-storeDocvectors", "-storeRaw"]
    args += ["-stemmer", params["stemmer"], "-threads", str(threads or os.cpu_count() or 1), "-quiet"]
    if params["keep_stopwords"]:
        args.append("-keepStopwords")
    if count:
        index_collection(args)
    shutil.rmtree(staging)
    if count:
        write_docids(out_dir)
    return count


def build_bm25_index(dataset: Dataset, out_dir: Path, params: dict, threads: int | None = None) -> int:
    count = write_lucene_index(dataset.iter_corpus(), out_dir, params, threads, desc=f"bm25 {dataset.name}")
    if count == 0:
        raise BraidError(f"dataset {dataset.name!r} has no documents to index")
    return count


def encode_shard(documents: Sequence[Document], out_dir: Path, params: dict) -> int:
    """A shard of a build job: the documents as Lucene will see them (analysis happens when they are indexed)."""
    with (out_dir / "docs.jsonl").open("w", encoding="utf-8") as handle:
        for doc in documents:
            handle.write(json.dumps({"id": doc.doc_id, "contents": doc.contents}, ensure_ascii=False) + "\n")
    return len(documents)


def _shard_documents(shards: Sequence[Path]) -> Iterator[Document]:
    for shard in shards:
        with (shard / "docs.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                yield Document(row["id"], "", row["contents"])


def assemble_shards(shards: Sequence[Path], out_dir: Path, params: dict, threads: int | None = None) -> int:
    """One Lucene index over every shard's documents, in shard order."""
    count = write_lucene_index(_shard_documents(shards), out_dir, params, threads, desc="bm25 shards")
    if count == 0:
        raise BraidError("the shards hold no documents")
    return count


KIND = IndexKind("bm25", PARAMS, build_bm25_index, _check, shards=Shards(encode_shard, assemble_shards))
