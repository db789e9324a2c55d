"""The reranker's dtype: bfloat16 by default only where the CPU computes it natively; an explicit dtype wins."""

from __future__ import annotations

import pytest

from braid.common import cpu_features
from braid.common.errors import BraidError
from braid.ranker import llm_source
from braid.ranker.llm_source import resolve_dtype
from braid.ranker.rerank_spec import RerankSpec


@pytest.mark.parametrize(
    ("flags", "device", "expected"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "cpu", "bfloat16"),
        ({"avx2", "amx_bf16", "amx_tile"}, "cpu", "bfloat16"),
        ({"avx2", "avx512f"}, "cpu", "float32"),
        ({"avx2", "amx_bf16"}, "cuda", "float32"),
    ],
)
def test_auto_follows_the_cpu(monkeypatch, flags, device, expected):
    monkeypatch.delenv("BRAID_RERANK_DTYPE", raising=False)
    monkeypatch.setattr(llm_source, "native_bfloat16", lambda: any(f in flags for f in cpu_features.BFLOAT16_FLAGS))
    assert resolve_dtype("auto", device) == expected
    assert resolve_dtype("float32", device) == "float32" and resolve_dtype("float16", device) == "float16"


def test_the_default_is_auto_and_bad_values_are_named():
    assert RerankSpec().dtype == "auto"
    with pytest.raises(BraidError, match="auto, float32, bfloat16, float16"):
        RerankSpec(dtype="int4")


def test_this_machine_flags_are_read():
    flags = cpu_features.cpu_flags()
    assert isinstance(flags, frozenset)
    assert cpu_features.native_bfloat16() == bool(flags & set(cpu_features.BFLOAT16_FLAGS))


def test_the_environment_decides_auto_for_a_process(monkeypatch):
    monkeypatch.setattr(llm_source, "native_bfloat16", lambda: True)
    monkeypatch.setenv("BRAID_RERANK_DTYPE", "float32")
    assert resolve_dtype("auto", "cpu") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"
    monkeypatch.setenv("BRAID_RERANK_DTYPE", "int4")
    with pytest.raises(BraidError, match="BRAID_RERANK_DTYPE"):
        resolve_dtype("auto", "cpu")


def test_the_document_cache_keeps_each_dtype_apart(tiny_lm_dir):
    """A document block cached by the float32 model is never read by the bfloat16 one (its keys and values
    round differently): the model key, part of every cache key, names the dtype."""
    import torch

    from braid.ranker.attention_backend import TorchBlockBackend
    from braid.ranker.block_forward import BlockForward
    from braid.ranker.doc_cache import DocumentKVCache
    from braid.ranker.llm_source import load_llm
    from braid.ranker.prompt_layout import PromptTemplate, build_prompt

    lms = {dtype: load_llm(str(tiny_lm_dir), dtype, "cpu") for dtype in ("float32", "bfloat16")}
    assert lms["float32"].key.endswith(":float32") and lms["bfloat16"].key.endswith(":bfloat16")
    assert next(lms["bfloat16"].model.parameters()).dtype == torch.bfloat16
    tokenizer = lms["float32"].tokenizer
    docs = ["Aspirin reduces the risk of heart attack.", "The cat sat on the mat.", "Heart disease."]
    prompt = build_prompt(tokenizer, PromptTemplate.for_tokenizer(tokenizer), "aspirin", docs, list("ABC"), [1] * 3, 16)
    cache = DocumentKVCache(1 << 24)
    results = {}
    with torch.inference_mode():
        for dtype, lm in lms.items():
            forward = BlockForward(lm.model, TorchBlockBackend(), cache, lm.key)
            first, again = forward(prompt, [1], 2, need_logits=True), forward(prompt, [1], 2, need_logits=True)
            assert (first.cached_docs, again.cached_docs) == (0, 3), dtype
            results[dtype] = again
    assert len(cache) == 8  # three documents and the instruction, once per dtype
    gap = (results["bfloat16"].last_logits.float() - results["float32"].last_logits.float()).abs().max()
    assert 0 < gap < 0.1 * results["float32"].last_logits.abs().max()
