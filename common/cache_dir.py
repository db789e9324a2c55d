"""Where braid keeps what it derives once and reuses (downloaded datasets, exported encoder graphs): outside the
repository, in ``$BRAID_CACHE_DIR`` or ``~/.cache/braid``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("BRAID_CACHE_DIR") or Path.home() / ".cache" / "braid")
