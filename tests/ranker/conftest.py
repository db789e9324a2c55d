"""Fixtures for the ranker tests: the embedded SmolLM2, converted once per cache."""

from __future__ import annotations

import pytest

from ranker.llm_source import LoadedLM, load_llm


@pytest.fixture(scope="session")
def smollm2() -> LoadedLM:
    return load_llm("smollm2", "float32", "cpu")
