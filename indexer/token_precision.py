"""How a token index stores its vectors: float16, or int8 codes with one float32 scale per token.

int8 halves a multi-vector index again after float16 (384-dimensional MiniLM tokens: 384 + 4 bytes a token instead
of 768). Each token row is quantized symmetrically on its own, code = round(x / s) with s = max |x| / 127, and read
back as code x s: the scheme of ColBERTv2's residual codes and of Vespa's and Qdrant's int8 vectors, without the
residuals (the rows are L2-normalized and small, so one scale per row keeps dot products within ~1e-3 of float16).

Files of a folder: ``tokens.f16`` (float16 rows), or ``tokens.i8`` and ``token_scales.f32``.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np

PRECISIONS = ("float16", "int8")
FLOAT16_TOKENS = "tokens.f16"
INT8_TOKENS = "tokens.i8"
INT8_SCALES = "token_scales.f32"


def check_precision(precision: str) -> None:
    from braid.common.errors import BraidError

    if precision not in PRECISIONS:
        raise BraidError(f"multivector precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def quantize(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 codes of each row and the row's float32 scale (max |x| / 127; 1 for a row of zeros)."""
    values = np.asarray(tokens, dtype=np.float32)
    if not len(values):
        return np.zeros(values.shape, dtype=np.int8), np.zeros(0, dtype=np.float32)
    scales = np.abs(values).max(axis=1) / np.float32(127)
    scales = np.where(scales > 0, scales, np.float32(1)).astype(np.float32)
    return np.clip(np.rint(values / scales[:, None]), -127, 127).astype(np.int8), scales


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    return np.asarray(codes, dtype=np.float32) * np.asarray(scales, dtype=np.float32)[:, None]


def stored_precision(folder: Path) -> str:
    return "int8" if (Path(folder) / INT8_TOKENS).is_file() else "float16"


class TokenWriter:
    """Appends documents' token rows to a folder's token files in ``precision``."""

    def __init__(self, folder: Path, precision: str) -> None:
        check_precision(precision)
        folder = Path(folder)
        self._rows = (folder / (INT8_TOKENS if precision == "int8" else FLOAT16_TOKENS)).open("wb")
        self._scales = (folder / INT8_SCALES).open("wb") if precision == "int8" else None

    def write(self, tokens: np.ndarray) -> None:
        if self._scales is None:
            self._rows.write(np.asarray(tokens, dtype=np.float16).tobytes())
            return
        codes, scales = quantize(tokens)
        self._rows.write(codes.tobytes())
        self._scales.write(scales.tobytes())

    def __enter__(self) -> TokenWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._rows.close()
        if self._scales is not None:
            self._scales.close()


def open_rows(folder: Path, dimension: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The folder's token rows as a read-only memory map (float16, or int8 codes) and, for int8, the scales."""
    folder = Path(folder)
    if stored_precision(folder) == "int8":
        size = (folder / INT8_TOKENS).stat().st_size
        if not size:
            return np.zeros((0, dimension), dtype=np.int8), np.zeros(0, dtype=np.float32)
        codes = np.memmap(folder / INT8_TOKENS, dtype=np.int8, mode="r").reshape(-1, dimension)
        return codes, np.fromfile(folder / INT8_SCALES, dtype=np.float32)
    size = (folder / FLOAT16_TOKENS).stat().st_size
    if not size:
        return np.zeros((0, dimension), dtype=np.float16), None
    return np.memmap(folder / FLOAT16_TOKENS, dtype=np.float16, mode="r").reshape(-1, dimension), None
