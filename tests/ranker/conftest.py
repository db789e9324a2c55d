"""Fixtures for the ranker tests: the embedded SmolLM2 (converted once per cache) and tiny random decoders."""

from __future__ import annotations

import pytest
import torch

from ranker.llm_source import LoadedLM, load_llm


@pytest.fixture(scope="session")
def smollm2() -> LoadedLM:
    return load_llm("smollm2", "float32", "cpu")


def tiny_model(family: str) -> torch.nn.Module:
    """A randomly initialised decoder of ``family`` with grouped-query attention, small enough to run in ms."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        family,
        vocab_size=96,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
