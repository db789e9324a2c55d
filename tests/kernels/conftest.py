"""Kernel tests run on a GPU when there is one, else on CPU under Triton's interpreter.

The interpreter is chosen when a kernel is defined, so the variable is set before ``kernels.block_attention`` is
first imported (only these tests import it).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICES = ["cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param
