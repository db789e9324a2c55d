"""Token encoders: plain checkpoints give normalized token outputs; multi-vector (ColBERT-format) checkpoints
load by path with their projection, and index and search like the default."""

from __future__ import annotations

import numpy as np
import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.common.model_source import resolve_model
from braid.indexer.index_store import build_index
from braid.indexer.token_encoder import TokenEncoder, is_multi_vector_checkpoint
from braid.retriever.multivector_retriever import MultiVectorRetriever


def test_plain_encoder_gives_normalized_token_outputs():
    encoder = TokenEncoder()
    assert not encoder.multi_vector and encoder.dimension == 384
    (tokens,) = encoder.encode_documents(["Vitamin D deficiency and infection."])
    # [CLS] vitamin d deficiency and infection . [SEP]
    assert tokens.shape == (8, 384)
    assert np.linalg.norm(tokens, axis=1) == pytest.approx(np.ones(8), abs=1e-5)


def test_multi_vector_checkpoint_loads_by_path_with_its_projection(tiny_beir, tmp_path):
    from sentence_transformers import MultiVectorEncoder

    folder = tmp_path / "colbert"
    # A ColBERT-format checkpoint (transformer, 128-d projection, skiplist mask, normalization), saved to a folder.
    MultiVectorEncoder(resolve_model("all-MiniLM-L6-v2"), device="cpu").save(str(folder))
    assert is_multi_vector_checkpoint(str(folder))
    encoder = TokenEncoder(str(folder))
    assert encoder.multi_vector and encoder.dimension == 128
    (tokens,) = encoder.encode_queries(["cat fish"])
    assert tokens.shape[1] == 128
    path, _, _ = build_index(
        open_dataset_dir(tiny_beir), "multivector", {"model": str(folder), "centroids": 2}, index_root=tmp_path / "i"
    )
    hits = MultiVectorRetriever(path, nprobe=2).search("cat fish", 4)
    assert len(hits) == 4 and hits[0].score >= hits[-1].score


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(BraidError, match="does not exist"):
        TokenEncoder(str(tmp_path / "no-such-model"))

    # Hub names go through the hub; offline (HF_HUB_OFFLINE, as in CI), the error says what to do.
    import os
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "from braid.indexer.token_encoder import TokenEncoder as T; T('braid-tests/nope')"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode != 0 and "model 'braid-tests/nope' is neither embedded" in result.stderr
