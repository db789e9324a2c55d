"""The write-ahead log of a live collection: every acknowledged write, durable before it is acknowledged.

As Elasticsearch's translog and Qdrant's WAL do, a write batch is appended to one file and synced to disk
(``fsync``) before the caller hears it succeeded; the indexes that make it searchable are derived from the log and
rebuilt from it after a crash, so what was acknowledged survives a SIGKILL or a power cut, and nothing else is
replayed. A record is one line of JSON carrying its sequence number and a CRC-32 of its payload: a crash in the
middle of an append leaves a torn last line, which was never acknowledged and is cut off when the log is next
opened; a damaged line before the last one is an error (the disk lost acknowledged data), never skipped silently.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset import Document
from braid.common.errors import BraidError


@dataclass(frozen=True)
class WriteRecord:
    """One acknowledged batch: documents upserted (replacing any of the same id) and ids deleted, all or none."""

    seq: int
    upsert: tuple[Document, ...] = ()
    delete: tuple[str, ...] = ()

    def payload(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "upsert": [
                {"id": d.doc_id, "title": d.title, "text": d.text, **({"metadata": d.metadata} if d.metadata else {})}
                for d in self.upsert
            ],
            "delete": list(self.delete),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WriteRecord:
        documents = tuple(
            Document(row["id"], row.get("title", ""), row.get("text", ""), row.get("metadata"))
            for row in payload["upsert"]
        )
        return cls(int(payload["seq"]), documents, tuple(payload["delete"]))


def _line(record: WriteRecord) -> bytes:
    body = json.dumps(record.payload(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    crc = zlib.crc32(body.encode("utf-8"))
    return (
        json.dumps({"crc": crc, "record": json.loads(body)}, ensure_ascii=False, separators=(",", ":")) + "\n"
    ).encode("utf-8")


def _parse(line: bytes) -> WriteRecord | None:
    """The record of one complete line, or None when the line is damaged."""
    try:
        outer = json.loads(line)
        body = json.dumps(outer["record"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        if zlib.crc32(body.encode("utf-8")) != outer["crc"]:
            return None
        return WriteRecord.from_payload(outer["record"])
    except (ValueError, KeyError, TypeError):
        return None


class WriteLog:
    """An append-only log file; :meth:`append` returns once the record is on disk."""

    def __init__(self, path: Path, floor: int = 0) -> None:
        """Read the log as a reader does: a last line that is torn (or still being written) is ignored, and the
        file is left as it is. :meth:`reload`, by the one writer, cuts such a line off and opens the file to append."""
        self.path = Path(path)
        self.writable = False
        # Records up to ``floor`` were folded into the collection's base; numbering goes on from there.
        self.floor = floor
        self.records: list[WriteRecord] = [record for record in self._recover() if record.seq > floor]
        self._handle = None

    def reload(self) -> bool:
        """Read the file again (the writer's lock now held) and open it for appends: whether another writer had
        appended records since it was read."""
        before = self.last_seq
        self.writable = True
        self.records = [record for record in self._recover() if record.seq > self.floor]
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("ab")
        return self.last_seq != before

    @property
    def last_seq(self) -> int:
        return self.records[-1].seq if self.records else self.floor

    def _recover(self) -> list[WriteRecord]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[WriteRecord] = []
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            complete = end >= 0
            line = data[offset : end if complete else len(data)]
            record = _parse(line) if complete else None
            if record is None:
                if complete and end + 1 < len(data):
                    raise BraidError(
                        f"{self.path}: record {len(records) + 1} is damaged and acknowledged writes follow it; "
                        "the disk lost data (restore the file, or move it away to drop every write it holds)"
                    )
                if not self.writable:
                    break  # a torn last line, or one being written now: not acknowledged (yet)
                # A torn last line: its append never finished, so it was never acknowledged.
                with self.path.open("r+b") as handle:
                    handle.truncate(offset)
                    handle.flush()
                    os.fsync(handle.fileno())
                break
            if records and record.seq <= records[-1].seq:
                raise BraidError(f"{self.path}: sequence numbers go backwards at record {len(records) + 1}")
            records.append(record)
            offset = end + 1
        return records

    def append(self, upsert: Sequence[Document] = (), delete: Sequence[str] = ()) -> WriteRecord:
        """Write one batch and sync it to disk: once this returns, the batch survives a crash."""
        if self._handle is None:
            raise BraidError(f"{self.path} is not open for appends (WriteLog.reload opens it)")
        record = WriteRecord(self.last_seq + 1, tuple(upsert), tuple(delete))
        self._handle.write(_line(record))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records.append(record)
        return record

    def keep_after(self, seq: int) -> None:
        """Drop the records up to ``seq`` (folded into a new base by an optimize), in one atomic rewrite."""
        kept = [record for record in self.records if record.seq > seq]
        if self._handle is None:
            raise BraidError(f"{self.path} is not open for appends (WriteLog.reload opens it)")
        self._handle.close()
        atomic_write_text(self.path, "".join(_line(record).decode("utf-8") for record in kept))
        self.records = kept
        self.floor = max(self.floor, seq)
        self._handle = self.path.open("ab")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
