"""The intra-op thread budget of the query encodings that the calling thread runs.

Each compiled encoder runs on as many inference threads as the machine has cores, which is what a lone encoder
wants. A pipeline that encodes one query with several models at once (the hybrid: MiniLM and SPLADE-tiny side by
side, beside Lucene) would then start two pools of all the cores each; it gives each encoding its share instead
(:meth:`braid.pipelines.pipeline.Pipeline._first_stage`), and :class:`~braid.indexer.openvino_transformer
.OpenVinoTransformer` runs the call on a copy of its model compiled for that many threads. Measured on 2 cores
(AVX2; scifact queries): the hybrid's two encoders on one thread each cost it 2-4 ms less CPU a query at the same
latency, while a lone encoder answers in 9 ms on two threads against 14 ms on one. Outputs are bit-identical on one
and on two threads (MiniLM and SPLADE-tiny, 100 queries, float32 on AVX2 and bfloat16 on AVX512_BF16), so the
query-encoding cache needs no thread count in its key.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from braid.common.thread_scoped import ThreadScoped

_budget: ThreadScoped[int | None] = ThreadScoped(None)


def encoding_threads(count: int | None) -> AbstractContextManager[None]:
    """Encodings in this thread use at most ``count`` inference threads inside the block (None: no limit)."""
    if count is not None and count < 1:
        raise ValueError(f"encoding threads must be >= 1, got {count}")
    return _budget.scope(count)


def encoding_thread_budget() -> int | None:
    """The budget :func:`encoding_threads` set for this thread, or None."""
    return _budget.get()
