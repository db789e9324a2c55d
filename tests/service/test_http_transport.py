"""What fails below the HTTP application still answers braid's JSON error object: oversized bodies, bodies that are
not UTF-8, request lines and headers past the parser's limit, deadlines too short to meet, and requests cut off
when the drain's grace period ends (503 with Retry-After, as gRPC answers UNAVAILABLE)."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlparse

import grpc
import httpx
import pytest

from braid.proto.braid.v1 import braid_pb2 as pb
from braid.service.client import BraidClient
from braid.service.core import SearchAnswer
from braid.service.server import ServerConfig
from tests.service.conftest import ServerThread, make_core


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as raw bytes; the status, headers and body the server answers before it closes."""
    url = urlparse(base)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)  # all of it: the server reads what follows its answer rather than resetting
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_body_over_the_limit_is_resource_exhausted_on_both_protocols(server):
    big = httpx.post(f"{server.http}/v1/search", content=b"x" * (9 << 20), headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "over 8388608 bytes" in big.json()["error"]["message"]
    with BraidClient(server.grpc) as client, pytest.raises(grpc.RpcError) as raised:
        client.stub.Search(pb.SearchRequest(query="x" * (9 << 20)), timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_body_that_is_not_utf8_is_invalid_argument(server):
    response = httpx.post(
        f"{server.http}/v1/search", content=b'{"query": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("where", ["url", "header"])
def test_a_request_head_past_the_parsers_limit_answers_json(server, where):
    huge = "a" * (1 << 20)
    target, extra = (f"/v1/search?{huge}", "") if where == "url" else ("/v1/search", f"X-Padding: {huge}\r\n")
    request = f"POST {target} HTTP/1.1\r\nHost: braid\r\nContent-Length: 2\r\n{extra}\r\n{{}}".encode()
    status, headers, body = raw_exchange(server.http, request)
    assert status == 400 and headers["content-type"] == "application/json", body[:200]
    error = json.loads(body)["error"]
    assert error["status"] == "INVALID_ARGUMENT" and "16384 bytes" in error["message"]


@pytest.mark.parametrize("timeout_ms", ["5e-324", "0.5", "0", "-1", "inf", "nan"])
def test_a_deadline_under_one_millisecond_is_invalid_argument(server, timeout_ms):
    response = httpx.post(
        f"{server.http}/v1/search", json={"query": "cat"}, headers={"X-Request-Timeout-Ms": timeout_ms}, timeout=30
    )
    assert response.status_code == 400 and "X-Request-Timeout-Ms" in response.json()["error"]["message"]


def test_a_request_still_running_when_the_grace_period_ends_gets_503_with_retry_after(service_data):
    running = ServerThread(make_core(service_data), ServerConfig(grpc_port=0, http_port=0, grace_s=1))
    release = threading.Event()
    search = running.core.search

    def stuck(query, deadline=None) -> SearchAnswer:
        release.wait(30)  # past the 1 s grace period
        return search(query, deadline)

    running.core.search = stuck
    answers: dict[str, object] = {}

    def over_http() -> None:
        answers["http"] = httpx.post(f"{running.http}/v1/search", json={"query": "cat"}, timeout=30)

    def over_grpc() -> None:
        with BraidClient(running.grpc) as client:
            try:
                client.search("cat", timeout=30)
            except grpc.RpcError as error:
                answers["grpc"] = error.code()

    clients = [threading.Thread(target=over_http), threading.Thread(target=over_grpc)]
    for thread in clients:
        thread.start()
    while running.core.admission.admitted < 2:
        time.sleep(0.01)
    try:
        assert running.stop() is False  # not drained: both requests outlived the grace period
    finally:
        release.set()
    for thread in clients:
        thread.join(30)
    cut = answers["http"]
    assert cut.status_code == 503 and cut.headers["retry-after"] == "1", cut.text
    assert cut.json()["error"]["status"] == "UNAVAILABLE"
    assert answers["grpc"] == grpc.StatusCode.UNAVAILABLE
