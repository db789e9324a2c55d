"""docs/api.md's contract, row by row, over both protocols: each bad request answers the status its row gives on gRPC
and on HTTP (which map as Google's API design guide maps them) with a message naming the field, and each zero value
answers what the default it stands for answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format

from braid.proto.braid.v1 import braid_pb2 as pb
from braid.proto.braid.v1 import braid_pb2_grpc
from braid.service.errors import HTTP_STATUS
from tests.service.conftest import API_KEY, ServerThread, make_core

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
# operation (its gRPC method) -> (HTTP route, request message, HTTP method)
OPERATIONS = {
    "Search": ("/v1/search", pb.SearchRequest, "POST"),
    "BatchSearch": ("/v1/batch-search", pb.BatchSearchRequest, "POST"),
    "Rerank": ("/v1/rerank", pb.RerankRequest, "POST"),
    "AddDocuments": ("/v1/pipelines/{pipeline}/documents", pb.AddDocumentsRequest, "POST"),
    "UpsertDocuments": ("/v1/pipelines/{pipeline}/documents", pb.AddDocumentsRequest, "PUT"),
    "DeleteDocuments": ("/v1/pipelines/{pipeline}/documents/delete", pb.DeleteDocumentsRequest, "POST"),
    "Reload": ("/v1/reload", pb.ReloadRequest, "POST"),
    "GetDocuments": ("/v1/documents/get", pb.GetDocumentsRequest, "POST"),
}


def table(header: str) -> list[list[str]]:
    """The rows of the table in docs/api.md whose header line is ``header``, as cell texts."""
    lines = DOC.read_text().splitlines()
    start = lines.index(header) + 2  # past the header and the |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split(" | ")])
    return rows


def request_body(text: str) -> dict:
    """A request cell as JSON, with "c×N" strings expanded to N copies of c."""

    def expand(value):
        if isinstance(value, str) and (match := re.fullmatch(r"(.)×(\d+)", value)):
            return match.group(1) * int(match.group(2))
        if isinstance(value, dict):
            return {key: expand(item) for key, item in value.items()}
        if isinstance(value, list):
            return [expand(item) for item in value]
        return value

    return expand(json.loads(text))


ERRORS = table("| operation | request | gRPC | HTTP | names |")
ZEROS = table("| operation | request | same as |")


@pytest.fixture(scope="module")
def contract_server(service_data):
    """bm25, fused (bm25 + multivector) and multivector, default limits, an API key: docs/api.md's server."""
    running = ServerThread(make_core(service_data, ("bm25", "fused", "multivector")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stub(contract_server):
    with grpc.insecure_channel(contract_server.grpc) as channel:
        yield braid_pb2_grpc.BraidStub(channel)


def over_http(server: ServerThread, operation: str, body: dict) -> httpx.Response:
    route, _, method = OPERATIONS[operation]
    if "{pipeline}" in route:
        body = dict(body)
        route = route.format(pipeline=body.pop("pipeline"))
    headers = {"content-type": "application/json", "authorization": f"Bearer {API_KEY}"}
    # json.dumps writes NaN as JSON's (non-standard) NaN, as a client would send it.
    return httpx.request(method, f"{server.http}{route}", content=json.dumps(body), headers=headers, timeout=60)


def over_grpc(stub, operation: str, body: dict):
    # The proto's JSON mapping spells non-finite doubles as strings ("NaN"); the message carries the double itself.
    proto_json = json.loads(json.dumps(body), parse_constant=lambda constant: constant)
    message = json_format.ParseDict(proto_json, OPERATIONS[operation][1]())
    return getattr(stub, operation)(message, metadata=[("authorization", f"Bearer {API_KEY}")], timeout=60)


def names(message: str, field: str) -> bool:
    return re.search(rf"\b{re.escape(field)}\b", message) is not None


def test_the_doc_has_every_operation_and_both_tables():
    assert {row[0] for row in ERRORS} == set(OPERATIONS)
    assert len(ERRORS) >= 30 and len(ZEROS) >= 5


@pytest.mark.parametrize(("operation", "request_text", "code", "http", "field"), ERRORS, ids=lambda v: v[:40])
def test_bad_request_answers_its_rows_status_on_both_protocols(
    contract_server, stub, operation, request_text, code, http, field
):
    body = request_body(request_text)
    response = over_http(contract_server, operation, body)
    error = response.json()["error"]
    assert response.status_code == int(http), error
    expected_name = code if code != "—" else next(c.name for c, s in HTTP_STATUS.items() if s == int(http))
    assert error["status"] == expected_name and names(error["message"], field), error
    if code == "—":  # a string where the proto has an int32: only JSON can carry it
        return
    assert HTTP_STATUS[grpc.StatusCode[code]] == int(http)  # the guide's mapping, both ways
    with pytest.raises(grpc.RpcError) as raised:
        over_grpc(stub, operation, body)
    assert raised.value.code() == grpc.StatusCode[code] and names(raised.value.details(), field), raised.value


def hits_of_both(server, stub, body: dict) -> list[tuple[str, float]]:
    response = over_http(server, "Search", body)
    assert response.status_code == 200, response.text
    over_http_hits = [(hit["doc_id"], hit["score"]) for hit in response.json()["hits"]]
    over_grpc_hits = [(hit.doc_id, hit.score) for hit in over_grpc(stub, "Search", body).hits]
    assert over_http_hits == over_grpc_hits and over_http_hits  # doubles survive JSON exactly (repr round-trips)
    return over_http_hits


@pytest.mark.parametrize(("operation", "request_text", "same_as"), ZEROS, ids=lambda v: v[:50])
def test_zero_values_mean_the_default_on_both_protocols(contract_server, stub, operation, request_text, same_as):
    assert operation == "Search"
    zero = hits_of_both(contract_server, stub, request_body(request_text))
    assert zero == hits_of_both(contract_server, stub, request_body(same_as))
