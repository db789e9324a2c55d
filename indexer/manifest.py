"""The manifest every braid index carries: what it is, what it was built from, and how to check it.

An index directory is complete exactly when its ``manifest.json`` exists (it is written last, inside the
atomic build folder). ``eval`` reuses an index whose manifest matches the wanted kind, parameters and corpus
checksum, and rebuilds otherwise.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from braid.common.errors import BraidError

MANIFEST_NAME = "manifest.json"
PENDING_NAME = "UPDATE-PENDING.json"
FORMAT_VERSION = 2  # 2: splade/slim keep their Lucene index in impact/


@functools.cache
def braid_version() -> str:
    # Cached: importlib.metadata parses the installed package's metadata on every call (16 ms of a live
    # collection's single-document write, whose segments each carry a manifest).
    try:
        return metadata.version("braid")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_checksums(root: Path) -> dict[str, dict[str, int | str]]:
    """Size and sha256 of every file under ``root`` except the manifest itself and an update's pending marker
    (:mod:`braid.indexer.update_transaction`), which lives only until the update is published."""
    listing: dict[str, dict[str, int | str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name not in (MANIFEST_NAME, PENDING_NAME)):
        listing[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return listing


@dataclass
class Manifest:
    kind: str
    params: dict
    dataset: str
    doc_count: int
    corpus_checksum: str
    braid_version: str = field(default_factory=braid_version)
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    files: dict[str, dict[str, int | str]] = field(default_factory=dict)
    build_seconds: float | None = None
    # role -> path of an index this one was built from, relative to this index's folder
    depends_on: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    # Build jobs: the job folder, shard size and checksums, per-shard files, timings and library versions.
    build: dict = field(default_factory=dict)

    def matches(self, kind: str, params: dict, corpus_checksum: str) -> bool:
        return (
            self.format_version == FORMAT_VERSION
            and self.kind == kind
            and self.params == params
            and self.corpus_checksum == corpus_checksum
        )

    def derives_from(self, kind: str, params: dict, corpus_checksum: str) -> bool:
        """Whether this is the index of that kind, parameters and collection, or that index with documents added
        or deleted since (an update records the collection it started from, ``build["edited_from"]``)."""
        edited_from = self.build.get("edited_from") if self.corpus_checksum.startswith("edited:") else None
        return self.matches(kind, params, corpus_checksum) or (
            edited_from == corpus_checksum and self.matches(kind, params, self.corpus_checksum)
        )

    def dependency(self, root: Path, role: str) -> Path:
        if role not in self.depends_on:
            raise BraidError(f"{root}: the manifest names no {role} index this {self.kind} index was built from")
        return (Path(root) / self.depends_on[role]).resolve()

    @property
    def docs_per_second(self) -> float | None:
        """Build throughput (encoding included): what the per-document cost estimates start from."""
        return self.doc_count / self.build_seconds if self.build_seconds else None

    @property
    def index_bytes(self) -> int:
        return sum(int(entry["bytes"]) for entry in self.files.values())

    def write(self, root: Path) -> None:
        """Record file checksums and write the manifest; call last, inside the atomic build folder."""
        self.files = file_checksums(root)
        (root / MANIFEST_NAME).write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, root: Path) -> Manifest:
        path = Path(root) / MANIFEST_NAME
        if not Path(root).is_dir():
            raise BraidError(f"index {root} does not exist")
        if not path.is_file():
            raise BraidError(f"{root} is not a complete braid index (no {MANIFEST_NAME})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as error:
            raise BraidError(f"{path} is not a valid braid manifest: {error}") from None
