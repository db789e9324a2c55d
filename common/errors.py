"""The one exception type that braid reports to users as a message rather than a traceback."""

from __future__ import annotations

from pathlib import Path


class BraidError(Exception):
    """Bad input, missing data or a missing index: the CLI prints the message and exits with code 2."""


class DataFormatError(BraidError):
    """A malformed line in an input file; the message names the file and the 1-based line number."""

    def __init__(self, path: Path | str, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


class DeadlineExceeded(BraidError):
    """A request's deadline passed before its work was done (a service answers DEADLINE_EXCEEDED / 504)."""


class Unsupported(BraidError):
    """A well-formed request that this pipeline cannot carry out (no reranker; an index that takes no updates): a
    service answers FAILED_PRECONDITION / 400."""


class UnknownDocuments(BraidError):
    """A request names documents the index does not hold (a delete): a service answers NOT_FOUND / 404."""


class DocumentsExist(BraidError):
    """A request adds documents whose ids the index already holds: a service answers ALREADY_EXISTS / 409."""
