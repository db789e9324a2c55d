"""The HTTP API conforms to its own OpenAPI schema: schemathesis, every check, against a real server on loopback.

schemathesis' own defaults (no configuration file), as a client checking the API from outside would run it. Checks
include: no 5xx; every status, header and content type documented; every response body (errors included,
malformed JSON too) valid against its declared schema; schema-valid requests accepted and invalid ones rejected;
unsupported methods answering 405 with an Allow header; stateful add/delete sequences.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import API_KEY, ServerThread, make_core

# Two servers over private copies of the indexes, both taking writes (a live collection): bm25 with fused (bm25 and
# multivector, RRF), and multivector alone; the generated requests add, upsert and delete documents on both.
SERVERS = {"bm25-fused": ("bm25", "fused"), "multivector": ("multivector",)}


@pytest.fixture(params=sorted(SERVERS))
def conformance_server(request, service_data, tmp_path):
    """A server over a private copy of the indexes (the writable one's change)."""
    dataset, index_root, fused = service_data
    shutil.copytree(index_root, tmp_path / "indexes")
    running = ServerThread(make_core((dataset, tmp_path / "indexes", fused), SERVERS[request.param], max_k=50))
    yield running
    running.stop()


@pytest.fixture
def plain_server(service_data, tmp_path):
    dataset, index_root, fused = service_data
    running = ServerThread(make_core((dataset, index_root, fused), ("bm25", "fused"), max_k=50))
    yield running
    running.stop()


def test_http_api_passes_every_schemathesis_check(conformance_server):
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "run",
        f"{conformance_server.http}/openapi.json", "--checks", "all", "--mode", "all", "--max-examples", "25",
        "--seed", "7", "--workers", "1", "--header", f"Authorization: Bearer {API_KEY}", "--no-color",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout or "passed" in done.stdout


def test_malformed_json_and_wrong_method_answer_braids_error_object(plain_server):
    import httpx

    base = plain_server.http
    broken = httpx.post(f"{base}/v1/search", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "request does not match the schema" in broken.json()["error"]["message"]
    wrong = httpx.get(f"{base}/v1/search")
    assert wrong.status_code == 405 and wrong.json()["error"]["status"] == "UNIMPLEMENTED"
    assert "POST" in wrong.headers["allow"]
    missing = httpx.get(f"{base}/v1/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
    timeout = httpx.post(f"{base}/v1/search", json={"query": "cat"}, headers={"X-Request-Timeout-Ms": ""})
    assert timeout.status_code == 400 and "X-Request-Timeout-Ms" in timeout.json()["error"]["message"]
    metrics = httpx.get(f"{base}/metrics")
    spec = httpx.get(f"{base}/openapi.json").json()
    declared = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert metrics.headers["content-type"] in declared
