"""Build a directory under a temporary name and rename it into place only when it is complete.

A build that crashes, or is killed with SIGKILL, leaves only a hidden ``.NAME.tmp-PID`` folder, never a
folder at the final path; the next build of the same target removes such leftovers whose process is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(final: Path) -> None:
    for leftover in final.parent.glob(f".{final.name}.tmp-*"):
        suffix = leftover.name.rsplit("-", 1)[-1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in [*root.rglob("*"), root]:
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    with contextlib.suppress(OSError):
        descriptor = os.open(root, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@contextlib.contextmanager
def atomic_directory(final: Path, overwrite: bool = False, durable: bool = True) -> Iterator[Path]:
    """Yield a scratch folder; on normal exit it replaces ``final``; on error it is deleted. ``durable``: its files
    are synced to disk before the rename (False for folders rebuilt from a log after a crash anyway)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    if final.exists() and not overwrite:
        raise FileExistsError(final)
    scratch = final.parent / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        yield scratch
        if durable:
            _fsync_tree(scratch)
        if final.exists():
            # Move the old index aside first so that the final path is never half old, half new.
            retired = final.parent / f".{final.name}.tmp-old-{os.getpid()}"
            final.rename(retired)
            scratch.rename(final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            scratch.rename(final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
