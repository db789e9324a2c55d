from __future__ import annotations

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError, DataFormatError


def test_reads_corpus_queries_qrels(tiny_beir):
    dataset = open_dataset_dir(tiny_beir)
    corpus = dataset.corpus()
    assert list(corpus) == ["d1", "d2", "d3", "d4"]
    assert corpus["d2"].contents == "cat cat fish"
    assert dataset.queries()["q1"] == "cat fish"
    assert dataset.qrels("test")["q2"] == {"d4": 2, "d1": 1}
    assert dataset.splits == ["test"]
    assert len(dataset.corpus_checksum()) == 64


def test_malformed_jsonl_line_names_file_and_line(tiny_beir):
    with (tiny_beir / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d9", "text": "broken\n')
    with pytest.raises(DataFormatError) as caught:
        list(open_dataset_dir(tiny_beir).iter_corpus())
    assert caught.value.line == 5
    assert str(tiny_beir / "corpus.jsonl") in str(caught.value)


def test_missing_id_and_duplicate_id_are_errors(tiny_beir):
    (tiny_beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"text": "no id"}\n')
    with pytest.raises(DataFormatError, match=r"queries.jsonl:2: missing \"_id\""):
        open_dataset_dir(tiny_beir).queries()
    (tiny_beir / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q1", "text": "b"}\n')
    with pytest.raises(DataFormatError, match="duplicate query id"):
        open_dataset_dir(tiny_beir).queries()


def test_bad_qrels_grade_names_line(tiny_beir):
    (tiny_beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tvery\n")
    with pytest.raises(DataFormatError, match=r"test.tsv:2: relevance grade must be an integer"):
        open_dataset_dir(tiny_beir).qrels("test")


def test_unknown_split_names_available(tiny_beir):
    with pytest.raises(BraidError, match=r"no 'dev' split \(available: test\)"):
        open_dataset_dir(tiny_beir).qrels("dev")
