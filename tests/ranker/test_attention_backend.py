"""Attention backends are found by name: the built-in exact one, backends that installed packages declare as
``braid.attention_backends`` entry points (braid.kernels' Triton backend), and ones registered at run time."""

from __future__ import annotations

import pytest

from braid.common.errors import BraidError
from braid.ranker import attention_backend
from braid.ranker.attention_backend import TorchBlockBackend, backend_names, get_backend, register_backend


def test_the_kernels_backend_is_found_through_its_entry_point_without_the_ranker_importing_it():
    assert "triton" in backend_names()
    assert "triton" not in attention_backend.ATTENTION_BACKENDS  # not registered by an import of braid.kernels
    assert type(get_backend("triton")).__module__ == "braid.kernels.triton_backend"


def test_a_backend_registered_at_run_time_is_selectable_by_name():
    class Exact(TorchBlockBackend):
        name = "exact-copy"

    register_backend("exact-copy", Exact)
    try:
        assert isinstance(get_backend("exact-copy"), Exact)
        assert "exact-copy" in backend_names()
    finally:
        attention_backend.ATTENTION_BACKENDS.pop("exact-copy")
    with pytest.raises(BraidError, match=r"unknown attention backend 'exact-copy' \(allowed: torch, triton\)"):
        get_backend("exact-copy")
