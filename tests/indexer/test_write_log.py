"""The write-ahead log: records survive a reopen, a torn last append is cut off, damage before the end is refused."""

from __future__ import annotations

import pytest

from braid.common.dataset import Document
from braid.common.errors import BraidError
from braid.indexer.write_log import WriteLog


def writer(path, floor=0) -> WriteLog:
    log = WriteLog(path, floor)
    log.reload()  # what the one writer does once it holds the collection's lock
    return log


def test_appended_records_come_back_in_order(tmp_path):
    log = writer(tmp_path / "wal.jsonl")
    log.append([Document("a", "T", "text", {"lang": "en"})])
    log.append(delete=["a", "b"])
    log.close()
    again = WriteLog(tmp_path / "wal.jsonl")
    assert [r.seq for r in again.records] == [1, 2]
    assert again.records[0].upsert == (Document("a", "T", "text", {"lang": "en"}),)
    assert again.records[1].delete == ("a", "b")


def test_a_torn_last_append_is_ignored_by_readers_and_cut_off_by_the_writer(tmp_path):
    path = tmp_path / "wal.jsonl"
    log = writer(path)
    log.append([Document("a", "", "kept")])
    log.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"crc": 1, "record": {"seq": 2, "upse')  # killed in the middle of a write
    reader = WriteLog(path)
    assert [r.seq for r in reader.records] == [1] and path.read_bytes() != whole  # a reader changes nothing
    log = writer(path)
    assert path.read_bytes() == whole
    assert log.append([Document("b", "", "next")]).seq == 2


def test_a_record_whose_checksum_fails_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "wal.jsonl"
    log = writer(path)
    log.append([Document("a", "", "one")])
    log.append([Document("b", "", "two")])
    log.close()
    path.write_bytes(path.read_bytes().replace(b"one", b"eno", 1))
    with pytest.raises(BraidError, match="record 1 is damaged and acknowledged writes follow it"):
        WriteLog(path)


def test_folded_records_are_dropped_and_numbering_goes_on(tmp_path):
    path = tmp_path / "wal.jsonl"
    log = writer(path)
    for text in ("one", "two", "three"):
        log.append([Document(text, "", text)])
    log.keep_after(2)
    assert [r.seq for r in log.records] == [3] and log.append(delete=["one"]).seq == 4
    log.close()
    assert [r.seq for r in WriteLog(path, floor=2).records] == [3, 4]
