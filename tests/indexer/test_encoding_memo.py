"""The encoding memo: encodes only what it has not seen, within its byte budget, and only where it is turned on."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from braid.indexer.encoding_memo import EncodingMemo, memo_encode, remembering


class CountingEncoder:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.array([[len(text), text.count("a")] for text in texts], dtype=np.float32)


def test_only_unseen_texts_are_encoded_and_results_keep_their_order():
    memo, encoder = EncodingMemo(), CountingEncoder()
    first = memo.encode("m", encoder, ["aa", "b", "ccc"])
    again = memo.encode("m", encoder, ["ccc", "new a", "aa"])
    assert encoder.seen == ["aa", "b", "ccc", "new a"]
    assert np.array_equal(np.asarray(again), np.array([[3, 0], [5, 1], [2, 2]], dtype=np.float32))
    assert np.array_equal(np.asarray(first)[0], np.asarray(again)[2])
    assert (memo.hits, memo.misses) == (2, 4)
    memo.encode("other model", encoder, ["aa"])  # another encoder's vectors are its own
    assert encoder.seen[-1] == "aa"


def test_the_budget_drops_the_least_recently_used_first():
    memo, encoder = EncodingMemo(budget_bytes=3 * 8), CountingEncoder()  # three 2 x float32 rows
    memo.encode("m", encoder, ["a", "b", "c"])
    memo.encode("m", encoder, ["a"])  # used again: "b" is now the oldest
    memo.encode("m", encoder, ["d"])
    assert len(memo) == 3 and memo.bytes == 24
    encoder.seen.clear()
    memo.encode("m", encoder, ["a", "c", "d", "b"])
    assert encoder.seen == ["b"]
    with pytest.raises(ValueError, match="budget_bytes"):
        EncodingMemo(-1)


def test_writers_consult_a_memo_only_inside_remembering():
    memo, encoder = EncodingMemo(), CountingEncoder()
    plain = memo_encode("m", encoder, ["x", "y"])
    assert isinstance(plain, np.ndarray) and len(memo) == 0  # a full build: the encoder's own output, nothing kept
    with remembering(memo):
        memo_encode("m", encoder, ["x", "y"])
        seen_elsewhere = []
        thread = threading.Thread(target=lambda: seen_elsewhere.append(memo_encode("m", encoder, ["z"])))
        thread.start()
        thread.join()
        memo_encode("m", encoder, ["x", "y"])
    assert encoder.seen == ["x", "y", "x", "y", "z"] and len(memo) == 2  # the other thread had none
