"""Open a Lucene index for reading and keep its external ids in doc-number order."""

from __future__ import annotations

from pathlib import Path

from braid.indexer.lucene_jvm import java_calls, java_cast, java_class

# External document ids in Lucene doc-number order, one per line: searchers map hits without loading documents.
DOCIDS_NAME = "docids.txt"


def open_reader(index_dir: Path):
    paths = java_class("java.nio.file.Paths")
    with java_calls():  # beside searches on other readers (a live collection's new segment)
        directory = java_class("org.apache.lucene.store.FSDirectory").open(paths.get(str(Path(index_dir).resolve())))
        return java_class("org.apache.lucene.index.DirectoryReader").open(directory)


def open_searcher(reader, similarity):
    searcher_class = java_class("org.apache.lucene.search.IndexSearcher")
    with java_calls():
        searcher = searcher_class(java_cast("org.apache.lucene.index.IndexReader", reader))
        searcher.setSimilarity(similarity)
    return searcher


def write_docids(index_dir: Path) -> None:
    reader = open_reader(index_dir)
    with java_calls():
        _write_docids(index_dir, reader)


def _write_docids(index_dir: Path, reader) -> None:
    try:
        stored = java_cast("org.apache.lucene.index.IndexReader", reader).storedFields()
        with (Path(index_dir) / DOCIDS_NAME).open("w", encoding="utf-8") as handle:
            for number in range(reader.maxDoc()):
                handle.write(stored.document(number).get("id") + "\n")
    finally:
        reader.close()


def read_docids(index_dir: Path, count: int) -> list[str]:
    return (Path(index_dir) / DOCIDS_NAME).read_text(encoding="utf-8").split("\n")[:count]
