"""Shared fixtures: tiny real collections on disk, in the layouts braid reads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

# Triton picks its interpreter when triton.language is first imported, and modules collected before the kernel tests
# can import it (sentence-transformers' sparse encoder does): so the choice is made here, before any test module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# The reranker's dtype "auto" means bfloat16 on some CPUs; the suite's numbers must not depend on the machine.
os.environ.setdefault("BRAID_RERANK_DTYPE", "float32")

# Hand-checkable documents: no stopwords, and words the Porter stemmer leaves as they are, so that
# document lengths and term frequencies can be counted by eye.
TINY_DOCS = {
    "d1": ("", "cat dog"),
    "d2": ("cat", "cat fish"),
    "d3": ("", "bird fish fish fish dog"),
    "d4": ("dog", "dog"),
}
TINY_QUERIES = {"q1": "cat fish", "q2": "dog", "q3": "bird", "d4": "dog dog"}
TINY_QRELS = [("q1", "d2", 1), ("q1", "d1", 0), ("q2", "d4", 2), ("q2", "d1", 1), ("q3", "d3", 1), ("d4", "d1", 1)]


def write_beir(root: Path, docs=TINY_DOCS, queries=TINY_QUERIES, qrels=TINY_QRELS) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    with (root / "corpus.jsonl").open("w") as handle:
        for doc_id, (title, text) in docs.items():
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (root / "queries.jsonl").open("w") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (root / "qrels" / "test.tsv").open("w") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, doc_id, grade in qrels:
            handle.write(f"{qid}\t{doc_id}\t{grade}\n")
    return root


def write_sample(source: Path, root: Path, n_docs: int, n_queries: int) -> tuple[list, dict[str, str]]:
    """Copy the first documents and queries of a real collection into a small BEIR folder at ``root``."""
    from itertools import islice

    from braid.common.dataset_resolver import open_dataset_dir

    dataset = open_dataset_dir(source)
    docs = list(islice(dataset.iter_corpus(), n_docs))
    queries = dict(islice(dataset.queries().items(), n_queries))
    write_beir(
        root,
        docs={doc.doc_id: (doc.title, doc.text) for doc in docs},
        queries=queries,
        qrels=[(qid, docs[0].doc_id, 1) for qid in queries],
    )
    return docs, queries


@pytest.fixture
def tiny_beir(tmp_path: Path) -> Path:
    return write_beir(tmp_path / "tiny")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = Path(os.environ.get("BRAID_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (root / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"shared datasets not found at {root}")
    return root


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct (converted from GGUF once per cache), for the ranker and service tests."""
    from braid.ranker.llm_source import load_llm

    return load_llm("smollm2", "float32", "cpu")
