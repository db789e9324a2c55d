"""Write a file so that readers see either the old content or the new, never half of it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: Path, suffix: str = "") -> Iterator[Path]:
    """A scratch file beside ``path`` for writers that want a file name (an exporter, a converter): it becomes
    ``path`` in one rename when the block succeeds and is removed when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(descriptor)
    try:
        yield Path(scratch)
        os.replace(scratch, path)
    finally:
        Path(scratch).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_output(path) as scratch, scratch.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
