"""How many texts an exported encoder graph runs at once, so that its working memory stays bounded.

sentence-transformers hands the transformer a whole batch (32-64 texts) padded to its longest text. OpenVINO and
ONNX Runtime allocate every intermediate tensor of a call for its input shape and keep those buffers for the next
call: measured on 2 cores, MiniLM's graph held 1.3 GB for 64 texts of 256 tokens and 4.8 GB for 64 of 512 (the
attention scores, heads x length x length per text, in each of its 6 layers), and SPLADE-tiny's 2.2 GB for 32 texts
of 256 tokens (its traced graph projects every token onto the 30,522-term vocabulary before the max over tokens).
Those buffers, not the corpus, were an encoding build's peak, and they grow with the square of the length.

:func:`rows_per_call` bounds the largest intermediate of one call (:data:`CALL_ELEMENTS` values) and the runners
split a batch into calls of that many texts. A text's vector does not depend on the other texts of its call
(:mod:`braid.indexer.openvino_transformer` pads every call to the same multiple of 16 positions), so the split
changes memory, not vectors; per-text throughput is the same, since a call of a few 256-token texts already fills
the matrix units of a small CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Values (float32) the largest intermediate tensor of one call may hold: 32 MB.
CALL_ELEMENTS = 8 << 20


def largest_per_text(config: Any, output_name: str, length: int) -> int:
    """Values in the largest intermediate tensor one text of ``length`` positions makes in the graph: attention
    scores, the feed-forward layer's activations, or (a masked LM's ``logits``) the vocabulary projection."""
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    largest = max(heads * length * length, int(getattr(config, "intermediate_size", 0) or 0) * length)
    if output_name == "logits":
        largest = max(largest, int(getattr(config, "vocab_size", 0) or 0) * length)
    return max(1, largest)


def rows_per_call(config: Any, output_name: str, length: int, budget: int | None = None) -> int:
    """Texts per graph call for inputs of ``length`` positions: as many as keep the largest intermediate within
    ``budget`` values (default :data:`CALL_ELEMENTS`), at least one."""
    return max(1, (budget or CALL_ELEMENTS) // largest_per_text(config, output_name, length))


def run_in_rows(
    run: Callable[[dict[str, np.ndarray]], np.ndarray], feeds: dict[str, np.ndarray], rows: int
) -> np.ndarray:
    """``run(feeds)`` over at most ``rows`` texts at a time, outputs joined in order along the batch axis."""
    total = next(iter(feeds.values())).shape[0]
    if total <= rows:
        return run(feeds)
    parts = [
        run({name: values[start : start + rows] for name, values in feeds.items()}) for start in range(0, total, rows)
    ]
    return np.concatenate(parts, axis=0)
