"""Kernel tests run on a GPU when there is one, else on CPU under Triton's interpreter (chosen by tests/conftest.py,
before any test module can import triton)."""

from __future__ import annotations

import pytest
import torch

DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param
