"""Readers for the MS MARCO passage layout: collection.tsv, queries.<split>.tsv and TREC-format qrels.

This is how MS MARCO and the TREC Deep Learning tracks ship (``pid<TAB>passage``, ``qid<TAB>query``,
``qid 0 pid grade``), so their evaluations run here exactly as they do in Anserini and ir_datasets.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from braid.common.dataset import Document, Qrels
from braid.common.errors import DataFormatError
from braid.common.trec_run import trec_rows


def _tsv_pairs(path: Path, what: str) -> Iterator[tuple[int, str, str]]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t", 1)
            if len(fields) != 2 or not fields[0].strip():
                raise DataFormatError(path, number, f"expected '<id><TAB><{what}>'")
            yield number, fields[0].strip(), fields[1]


def read_collection(path: Path) -> Iterator[Document]:
    seen: set[str] = set()
    for number, pid, text in _tsv_pairs(path, "passage"):
        if pid in seen:
            raise DataFormatError(path, number, f"duplicate passage id {pid!r}")
        seen.add(pid)
        yield Document(doc_id=pid, title="", text=text)


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, qid, text in _tsv_pairs(path, "query"):
        if qid in queries:
            raise DataFormatError(path, number, f"duplicate query id {qid!r}")
        queries[qid] = text
    return queries


def read_trec_qrels(path: Path) -> Qrels:
    """Read TREC qrels: ``qid iteration docid grade``, whitespace separated."""
    qrels: Qrels = {}
    for number, (qid, _, doc_id, grade) in trec_rows(path, "qid iter docid grade"):
        try:
            qrels.setdefault(qid, {})[doc_id] = int(grade)
        except ValueError:
            raise DataFormatError(path, number, f"relevance grade must be an integer, got {grade!r}") from None
    return qrels
