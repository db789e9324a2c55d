"""Row-major matrix files read a block of rows at a time, for builds that must not hold a collection in memory.

A build that walks a whole vector file through a memory map keeps every page it touched resident, and counted in its
RSS, until the kernel wants them back: a pass over a 2 GB token file shows as 2 GB more peak RSS. Plain reads into
a block-sized array hold one block, whatever the file's size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

#: Rows per read unless told otherwise (65,536 rows of 384 float32 values: 100 MB).
BLOCK_ROWS = 65536


def read_blocks(
    path: Path, dtype: np.dtype | type, dimension: int, rows: int = BLOCK_ROWS
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, block) pairs covering the file in order, ``rows`` rows per block (the last may be shorter)."""
    with Path(path).open("rb") as handle:
        start = 0
        while True:
            block = np.fromfile(handle, dtype=dtype, count=rows * dimension)
            if not len(block):
                return
            block = block.reshape(-1, dimension)
            yield start, block
            start += len(block)


def gather_rows(path: Path, dtype: np.dtype | type, dimension: int, rows: np.ndarray) -> np.ndarray:
    """The matrix's ``rows`` (distinct, any order; returned in that order), gathered in one sequential pass."""
    order = np.argsort(rows, kind="stable")
    wanted = np.asarray(rows, dtype=np.int64)[order]
    out = np.empty((len(wanted), dimension), dtype=dtype)
    position = 0
    for start, block in read_blocks(path, dtype, dimension):
        end = int(np.searchsorted(wanted, start + len(block), side="left"))
        out[order[position:end]] = block[wanted[position:end] - start]
        position = end
        if position == len(wanted):
            break
    return out
