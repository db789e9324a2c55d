"""Documents cut into overlapping passages, and collections written whole or not at all."""

from __future__ import annotations

import json

import pytest

from braid.common.collection_info import PassageSettings, read_collection_info
from braid.common.collection_writer import stage_collection
from braid.common.dataset import Document
from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.common.passages import document_of, split_document


def test_passages_overlap_cover_every_word_and_name_their_document():
    document = Document("doc#1", "Title", " ".join(f"w{i}" for i in range(10)), {"lang": "en"})
    passages = split_document(document, PassageSettings(words=4, overlap=1))
    assert [p.text for p in passages] == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert [p.doc_id for p in passages] == ["doc#1#0", "doc#1#1", "doc#1#2"]
    assert {document_of(p.doc_id) for p in passages} == {"doc#1"}
    assert all(p.title == "Title" and p.metadata == {"lang": "en"} for p in passages)
    assert [p.text for p in split_document(Document("s", "", "a b"), PassageSettings(4, 1))] == ["a b"]
    assert document_of("plain") == "plain" and document_of("a#b") == "a#b"


@pytest.mark.parametrize(("words", "overlap"), [(0, 0), (4, 4), (4, -1)])
def test_passage_settings_are_checked(words, overlap):
    with pytest.raises(BraidError, match="passage"):
        PassageSettings(words, overlap)


def test_a_collection_is_staged_then_published_and_opens_without_queries(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text(
        json.dumps({"id": "a", "text": " ".join(["word"] * 9), "lang": "en"}) + "\n"
        + json.dumps({"id": "b", "text": "short"}) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    staged = stage_collection("mine", source, tmp_path / "collections", passages=PassageSettings(4, 0))
    assert not (tmp_path / "collections" / "mine").exists()  # nothing at the name until published
    final = staged.publish()
    info = read_collection_info(final)
    assert (info.documents, info.units, info.passages) == (2, 4, PassageSettings(4, 0))
    dataset = open_dataset_dir(final)
    assert [d.doc_id for d in dataset.iter_corpus()] == ["a#0", "a#1", "a#2", "b#0"]
    assert next(dataset.iter_corpus()).metadata == {"lang": "en"}
    assert dataset.queries() == {} and dataset.passages == PassageSettings(4, 0)
    with pytest.raises(BraidError, match="holds documents only: evaluation needs queries"):
        dataset.qrels("test")


def test_a_malformed_source_leaves_no_collection(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(BraidError, match="duplicate document id"):
        stage_collection("mine", source, tmp_path / "collections")
    assert list((tmp_path / "collections").iterdir()) == []
    with pytest.raises(BraidError, match="invalid collection name"):
        stage_collection("../up", source, tmp_path / "collections")
