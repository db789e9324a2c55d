"""Document identifiers that are one token each, as FIRST needs.

FIRST (Reddy et al., "FIRST: Faster Improved Listwise Reranking with Single Token Decoding", 2024) ranks by the
logits of the first generated token over the candidates' identifiers, so each identifier must be exactly one
token, the same one in the document's "[X]" tag and right after the prefilled "[" of the answer. The scheme
tries A-Z, a-z, then two-letter capitals (AB, AC, ...) and keeps those the tokenizer encodes as "[", X, "]"
with X a single token; how many there are bounds how many documents one FIRST prompt can hold.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import product
from typing import Any

from braid.common.errors import BraidError


@dataclass(frozen=True)
class IdentifierScheme:
    labels: tuple[str, ...]
    token_ids: tuple[int, ...]

    @property
    def capacity(self) -> int:
        return len(self.labels)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, limit: int = 400) -> IdentifierScheme:
        candidates = [*string.ascii_uppercase, *string.ascii_lowercase]
        candidates += ["".join(pair) for pair in product(string.ascii_uppercase, repeat=2)]
        bracket = tokenizer.encode("[", add_special_tokens=False)
        closing = None
        labels, ids, seen = [], [], set()
        for label in candidates:
            encoded = tokenizer.encode(f"[{label}]", add_special_tokens=False)
            if len(encoded) != 3 or encoded[:1] != bracket:
                continue
            if closing is None:
                closing = encoded[2]
            if encoded[2] != closing or encoded[1] in seen:
                continue
            seen.add(encoded[1])
            labels.append(label)
            ids.append(encoded[1])
            if len(labels) == limit:
                break
        if not labels:
            raise BraidError("the tokenizer has no single-token document identifiers ([A], [B], ...)")
        return cls(tuple(labels), tuple(ids))

    def take(self, count: int) -> IdentifierScheme:
        if count > self.capacity:
            raise BraidError(
                f"{count} documents in one prompt but the tokenizer has only {self.capacity} single-token "
                f"identifiers; use a window of at most {self.capacity} (lists longer than the window are ranked "
                "in sliding windows)"
            )
        return IdentifierScheme(self.labels[:count], self.token_ids[:count])
