"""Dynamic batching for the reranker: requests that arrive together share one model call.

Callers (search worker threads, Rerank requests) hand their (query, documents) to a queue and wait. One
batching thread takes the first waiting request, keeps collecting for up to ``max_wait_ms`` or until
``max_batch`` requests are in hand, and ranks them all with :meth:`braid.ranker.reranker.BlockRanker.rerank_many`,
whose single forward pass computes the shared instruction block once and every request's documents in one
padded batch (the same idea as continuous batching in LLM servers: fill the accelerator, amortize the weights'
memory traffic). A request whose deadline passes while it waits is answered DEADLINE_EXCEEDED and skipped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from braid.common.errors import DeadlineExceeded

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    query: str
    docs: Sequence[tuple[str, str]]
    deadline: float | None
    future: Future


class BatchingReranker:
    """Wraps a :class:`~braid.ranker.reranker.BlockRanker` with the same ``rerank`` call, batched across threads."""

    def __init__(
        self,
        ranker,
        max_batch: int = 8,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.ranker = ranker
        self.spec = ranker.spec
        #: how the pipeline fuses this ranker's scores with the first stage's (the wrapped ranker's own setting)
        self.fusion_weight = ranker.fusion_weight
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._on_batch = on_batch or (lambda size: None)
        self._queue: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="rerank-batcher", daemon=True)
        self._thread.start()

    def rerank(
        self, query: str, docs: Sequence[tuple[str, str]], deadline: float | None = None
    ) -> list[tuple[str, float]]:
        pending = _Pending(query, docs, deadline, Future())
        self._queue.put(pending)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return pending.future.result(timeout)
        except TimeoutError:
            pending.future.cancel()
            raise DeadlineExceeded("deadline exceeded while waiting for the reranker") from None

    def _collect(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        until = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            remaining = until - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # keep the stop signal for the loop
                break
            batch.append(item)
        return batch

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._collect(first)
            now = time.monotonic()
            live = []
            for item in batch:
                if not item.future.set_running_or_notify_cancel():
                    continue  # its caller gave up
                if item.deadline is not None and now >= item.deadline:
                    item.future.set_exception(DeadlineExceeded("deadline exceeded before reranking started"))
                    continue
                live.append(item)
            if not live:
                continue
            self._on_batch(len(live))
            try:
                results = self.ranker.rerank_many([(item.query, item.docs) for item in live])
            except Exception as error:  # each caller sees the failure of the call it shared
                for item in live:
                    item.future.set_exception(error)
                continue
            for item, result in zip(live, results, strict=True):
                item.future.set_result(result)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)
