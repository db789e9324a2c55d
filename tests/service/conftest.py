"""A real braid server (gRPC + HTTP on ephemeral loopback ports) over a tiny collection, for the service tests."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.pipelines.pipeline import load_pipeline
from braid.service.core import AuthConfig, SearchCore
from braid.service.limits import ServiceLimits
from braid.service.server import BraidServer, ServerConfig
from tests.conftest import write_beir

API_KEY = "test-key-0123456789abcdef"
FUSED = """
name = "fused"
[[retrievers]]
kind = "bm25"
[[retrievers]]
kind = "multivector"
pool_factor = 1
[fusion]
method = "rrf"
"""


class ServerThread:
    """A :class:`BraidServer` running on its own event loop in a background thread."""

    def __init__(self, core: SearchCore, config: ServerConfig | None = None) -> None:
        self.core = core
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = BraidServer(core, config or ServerConfig(grpc_port=0, http_port=0, grace_s=10))
        self.run(self.server.start())

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    @property
    def grpc(self) -> str:
        return self.server.addresses["grpc"]

    @property
    def http(self) -> str:
        return self.server.addresses["http"]

    def stop(self) -> bool:
        drained = self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return drained


@pytest.fixture(scope="session")
def service_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(dataset folder, index root, fused pipeline file) with every index the service tests serve already built."""
    root = tmp_path_factory.mktemp("service")
    dataset = write_beir(root / "tiny")
    fused = root / "fused.toml"
    fused.write_text(FUSED)
    index_root = root / "indexes"
    SearchCore(
        open_dataset_dir(dataset), [load_pipeline("bm25"), load_pipeline(str(fused))], index_root, build_missing=True
    ).close()
    return dataset, index_root, fused


def make_core(service_data, pipelines=("bm25",), **limits) -> SearchCore:
    dataset, index_root, fused = service_data
    specs = [load_pipeline(str(fused) if name == "fused" else name) for name in pipelines]
    return SearchCore(
        open_dataset_dir(dataset), specs, index_root, ServiceLimits(**limits), AuthConfig(API_KEY), build_missing=True
    )


@pytest.fixture(scope="module")
def server(service_data):
    running = ServerThread(make_core(service_data, ("bm25", "fused"), max_k=50))
    yield running
    running.stop()
