from __future__ import annotations

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import DataFormatError


def _write_msmarco(root, grades):
    root.mkdir()
    (root / "collection.tsv").write_text("0\tthe cat sat\n1\ta dog ran\n2\tfish swim\n")
    (root / "queries.dev.tsv").write_text("100\tcat\n101\tdog\n")
    (root / "qrels.dev.tsv").write_text("".join(f"{q} 0 {d} {g}\n" for q, d, g in grades))
    return root


def test_msmarco_layout_with_binary_qrels(tmp_path):
    dataset = open_dataset_dir(_write_msmarco(tmp_path / "mm", [(100, 0, 1), (101, 1, 1)]))
    assert dataset.layout == "msmarco"
    assert [doc.doc_id for doc in dataset.iter_corpus()] == ["0", "1", "2"]
    assert dataset.split_queries("dev") == {"100": "cat", "101": "dog"}
    assert dataset.default_rel_threshold == 1


def test_graded_qrels_follow_trec_dl_convention(tmp_path):
    dataset = open_dataset_dir(_write_msmarco(tmp_path / "dl", [(100, 0, 3), (100, 2, 1), (101, 1, 0)]))
    assert dataset.qrels("dev")["100"] == {"0": 3, "2": 1}
    assert dataset.default_rel_threshold == 2


def test_bad_collection_line(tmp_path):
    root = _write_msmarco(tmp_path / "bad", [(100, 0, 1)])
    (root / "collection.tsv").write_text("0\tok\nno-tab-here\n")
    with pytest.raises(DataFormatError, match=r"collection.tsv:2"):
        list(open_dataset_dir(root).iter_corpus())
