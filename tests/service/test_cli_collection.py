"""``braid collection``: a user's own documents in (no queries), searched by name, written and optimized."""

from __future__ import annotations

import json

import pytest

from braid.service.cli.main import main

DOCS = [
    {"id": "lucene", "title": "Lucene", "text": "an inverted index library for full text search", "lang": "en"},
    {"id": "faiss", "text": "dense vector search with inner products and binary codes", "lang": "en"},
    {"id": "long", "title": "Long", "text": " ".join(f"filler{i}" for i in range(60)) + " zebra savanna"},
]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in DOCS), encoding="utf-8")
    monkeypatch.setenv("BRAID_COLLECTIONS_DIR", str(tmp_path / "collections"))
    return source, ["--index-dir", str(tmp_path / "indexes")]


def search(capsys, index_args, query, *extra):
    assert main(["search", "--collection", "mine", *index_args, "--json", query, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_create_search_upsert_delete_optimize(folders, capsys):
    source, index_args = folders
    assert main(["collection", "create", "mine", "--from", str(source), "--pipeline", "bm25", *index_args]) == 0
    assert "collection mine: 3 documents" in capsys.readouterr().out
    assert [hit["doc_id"] for hit in search(capsys, index_args, "inverted index")][:1] == ["lucene"]
    assert main(["collection", "list", "--json"]) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["mine"]

    update = source.with_name("update.csv")
    update.write_text("id,text\nfaiss,graph search with hnsw layers\nnew,a giraffe under acacia trees\n")
    assert main(["collection", "upsert", "mine", "--from", str(update), *index_args]) == 0
    assert "4 documents (write 1)" in capsys.readouterr().out
    assert search(capsys, index_args, "giraffe acacia")[0]["doc_id"] == "new"
    assert search(capsys, index_args, "hnsw graph")[0]["doc_id"] == "faiss"
    assert "faiss" not in [hit["doc_id"] for hit in search(capsys, index_args, "inner products binary codes")]

    assert main(["collection", "delete", "mine", "new", "ghost", *index_args]) == 2
    assert "not in the collection" in capsys.readouterr().err
    assert main(["collection", "delete", "mine", "new", *index_args]) == 0
    assert "3 documents (write 2)" in capsys.readouterr().out
    before = search(capsys, index_args, "search")
    assert main(["index", "optimize", "mine", "--pipeline", "bm25", *index_args]) == 0
    assert "2 write(s) up to 2 folded into fresh indexes of 3 documents" in capsys.readouterr().out
    assert search(capsys, index_args, "search") == before


def test_passages_report_documents_at_their_best_passage(folders, capsys):
    source, index_args = folders
    create = ["collection", "create", "mine", "--from", str(source), "--pipeline", "bm25", "--passage-words", "20"]
    assert main([*create, *index_args]) == 0
    assert "3 documents, 6 passages of 20 words" in capsys.readouterr().out
    hits = search(capsys, index_args, "zebra savanna filler59")
    assert hits[0]["doc_id"] == "long" and hits[0]["passage"] == "long#3"
    assert len({hit["doc_id"] for hit in hits}) == len(hits)  # a document once, however many passages match
    update = source.with_name("up.jsonl")
    update.write_text(json.dumps({"id": "long", "text": "short now: okapi"}) + "\n")
    assert main(["collection", "upsert", "mine", "--from", str(update), *index_args]) == 0
    assert "into mine: 3 documents (write 1)" in capsys.readouterr().out
    assert [hit["passage"] for hit in search(capsys, index_args, "okapi")] == ["long#0"]
    assert "long" not in [hit["doc_id"] for hit in search(capsys, index_args, "zebra savanna")]


def test_bad_sources_and_names_are_exit_2_with_nothing_written(folders, tmp_path, capsys):
    source, index_args = folders
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "text": "x"}\n{"text": "no id"}\n')
    assert main(["collection", "create", "bad", "--from", str(broken), "--pipeline", "bm25", *index_args]) == 2
    assert "broken.jsonl:2: no document id" in capsys.readouterr().err
    assert not (tmp_path / "collections" / "bad").exists()
    assert main(["collection", "create", "../x", "--from", str(source), *index_args]) == 2
    assert "invalid collection name" in capsys.readouterr().err
    assert main(["collection", "create", "mine", "--from", str(source), "--passage-words", "5",
                 "--passage-overlap", "5", *index_args]) == 2  # fmt: skip
    assert "passage overlap must be between 0 and 4" in capsys.readouterr().err
    assert main(["collection", "info", "nope"]) == 2
    assert "no collection 'nope'" in capsys.readouterr().err


def test_a_running_server_is_the_collections_one_writer(folders, capsys, tmp_path):
    from braid.common.dataset_resolver import resolve_dataset
    from braid.pipelines.pipeline import load_pipeline
    from braid.service.core import SearchCore

    source, index_args = folders
    assert main(["collection", "create", "mine", "--from", str(source), "--pipeline", "bm25", *index_args]) == 0
    capsys.readouterr()
    core = SearchCore(resolve_dataset("mine"), [load_pipeline("bm25")], tmp_path / "indexes")
    try:
        assert main(["collection", "delete", "mine", "faiss", *index_args]) == 2
        assert "being written by another process or server" in capsys.readouterr().err
    finally:
        core.close()
    assert main(["collection", "delete", "mine", "faiss", *index_args]) == 0
