"""What one request may ask for, and how much the server takes on at once."""

from __future__ import annotations

from dataclasses import dataclass, fields

from braid.common.errors import BraidError


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds checked at the boundary, before any work: a request beyond them is refused with a message.

    ``max_concurrency`` counts requests admitted (running or waiting for a worker); one more is rejected at once
    with RESOURCE_EXHAUSTED / 429, so an overloaded server answers fast instead of queueing without bound.
    ``default_timeout_s`` applies to requests that carry no deadline of their own.
    """

    default_k: int = 10
    max_k: int = 1000
    max_query_chars: int = 2048
    max_batch: int = 64
    max_rerank_documents: int = 100
    max_document_chars: int = 20_000
    max_update_documents: int = 1000
    max_request_bytes: int = 8 << 20
    max_concurrency: int = 64
    workers: int = 8
    default_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value <= 0:
                raise BraidError(f"service limit {item.name} must be > 0, got {value}")

    def resolve_k(self, k: int) -> int:
        """The number of hits a request asks for: ``k``, or ``default_k`` for 0 (proto3's unset integer, and the same
        over HTTP), between 1 and ``max_k``."""
        if not 0 <= k <= self.max_k:
            raise BraidError(f"k must be between 1 and {self.max_k} (0 or absent: {self.default_k}), got {k}")
        return k or self.default_k

    def check_query(self, query: str) -> None:
        if not query or not query.strip():
            raise BraidError("empty query: give some query text")
        if len(query) > self.max_query_chars:
            raise BraidError(f"query is {len(query)} characters; at most {self.max_query_chars} are allowed")

    def check_count(self, what: str, count: int, limit: int) -> None:
        if count == 0:
            raise BraidError(f"no {what} given")
        if count > limit:
            raise BraidError(f"{count} {what} in one request; at most {limit} are allowed")
