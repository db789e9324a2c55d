"""Turn what a user types after ``--dataset`` into a :class:`Dataset`.

Resolution order: an existing path; a folder of that name under the data directory (``--data-dir``, else
``$BRAID_DATA_DIR``, else ``./data``), under the collections directory (:func:`collections_dir`) or under braid's
download cache; a public BEIR dataset, downloaded
with its checksum verified. The folder's files decide the layout (BEIR or MS MARCO passage).
"""

from __future__ import annotations

import os
from pathlib import Path

from braid.common import beir_format, msmarco_format
from braid.common.beir_download import BEIR_MD5, download_beir
from braid.common.cache_dir import cache_root
from braid.common.collection_info import read_collection_info
from braid.common.dataset import Dataset
from braid.common.errors import BraidError


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BRAID_DATA_DIR") or "data")


def collections_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where ``braid collection create`` writes collections (``--collections-dir``, else
    ``$BRAID_COLLECTIONS_DIR``, else ``./collections``); names resolve there after the data directory."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BRAID_COLLECTIONS_DIR") or "collections")


def cache_dir() -> Path:
    return cache_root() / "datasets"


def _beir_dataset(root: Path, name: str) -> Dataset:
    corpus = root / "corpus.jsonl"
    queries = root / "queries.jsonl"
    # Documents alone are a collection to index and search; evaluation asks for queries and qrels when it runs.
    qrels_dir = root / "qrels"
    readers = {path.stem: (lambda p=path: beir_format.read_qrels(p)) for path in sorted(qrels_dir.glob("*.tsv"))}
    if readers and not queries.is_file():
        raise BraidError(f"{root} has qrels/ but no queries.jsonl for them")
    info = read_collection_info(root)
    return Dataset(
        name=name,
        root=root,
        layout="beir",
        corpus_files=(corpus,),
        corpus_reader=lambda: beir_format.read_corpus(corpus),
        queries_reader=lambda: beir_format.read_queries(queries) if queries.is_file() else {},
        qrels_readers=readers,
        passages=info.passages if info else None,
        fields=dict(info.fields) if info else {},
    )


def _msmarco_qrels_file(root: Path, split: str) -> Path | None:
    for candidate in (root / f"qrels.{split}.tsv", root / f"qrels.{split}.txt", root / "qrels" / f"{split}.txt"):
        if candidate.is_file():
            return candidate
    return None


def _msmarco_dataset(root: Path, name: str) -> Dataset:
    collection = root / "collection.tsv"
    query_files = {path.name[len("queries.") : -len(".tsv")]: path for path in sorted(root.glob("queries.*.tsv"))}
    if not query_files:
        raise BraidError(f"{root} has collection.tsv but no queries.<split>.tsv")
    readers = {}
    for split in query_files:
        qrels_file = _msmarco_qrels_file(root, split)
        if qrels_file is not None:
            readers[split] = lambda p=qrels_file: msmarco_format.read_trec_qrels(p)

    def all_queries() -> dict[str, str]:
        merged: dict[str, str] = {}
        for path in query_files.values():
            merged.update(msmarco_format.read_queries(path))
        return merged

    dataset = Dataset(
        name=name,
        root=root,
        layout="msmarco",
        corpus_files=(collection,),
        corpus_reader=lambda: msmarco_format.read_collection(collection),
        queries_reader=all_queries,
        qrels_readers=readers,
    )
    # TREC DL judges on a 0-3 scale and counts grade >= 2 as relevant for MRR, MAP and recall; MS MARCO's
    # sparse dev judgments are all grade 1. Graded qrels therefore mean the TREC DL convention.
    if any(grade >= 2 for split in dataset.splits for docs in dataset.qrels(split).values() for grade in docs.values()):
        dataset.default_rel_threshold = 2
    return dataset


def open_dataset_dir(root: Path, name: str | None = None) -> Dataset:
    """Open a dataset folder, detecting its layout from the files present."""
    name = name or root.resolve().name
    if (root / "corpus.jsonl").is_file():
        return _beir_dataset(root, name)
    if (root / "collection.tsv").is_file():
        return _msmarco_dataset(root, name)
    raise BraidError(
        f"{root} is not a dataset: expected corpus.jsonl + queries.jsonl + qrels/ (BEIR layout) "
        "or collection.tsv + queries.<split>.tsv + qrels (MS MARCO layout)"
    )


def resolve_dataset(spec: str, data_dir_arg: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Resolve a dataset path or name; see the module docstring for the order."""
    if not spec or not spec.strip():
        raise BraidError("empty dataset name")
    as_path = Path(spec).expanduser()
    if as_path.is_dir():
        return open_dataset_dir(as_path)
    if os.sep in spec or spec.startswith("."):
        raise BraidError(f"dataset folder {spec} does not exist")
    base = data_dir(data_dir_arg)
    for root in (base / spec, collections_dir() / spec, cache_dir() / spec):
        if root.is_dir():
            return open_dataset_dir(root, spec)
    if download and spec in BEIR_MD5:
        return open_dataset_dir(download_beir(spec, cache_dir()), spec)
    hints = []
    for root, what in ((base, "datasets"), (collections_dir(), "collections")):
        found = (
            sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        )
        hints.append(f"{what} in {root}: {', '.join(found)}" if found else f"no {what} under {root}")
    hint = "; ".join(hints)
    raise BraidError(f"unknown dataset {spec!r} ({hint}; BEIR names download when online)")
