"""The gRPC and HTTP servers, started for real on loopback, answered by real clients."""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from braid.proto.braid.v1 import braid_pb2 as pb
from braid.service.client import BraidClient
from tests.service.conftest import API_KEY, ServerThread, make_core


def post(server, path: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(f"{server.http}{path}", json=body, headers=headers, timeout=30)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_grpc_and_http_return_the_pipelines_own_ranking(server):
    with server.core.registry.slot("fused").lease() as pipeline:
        expected = pipeline.search("cat fish", 3)
    with BraidClient(server.grpc) as client:
        answer = client.search("cat fish", k=3, pipeline="fused", explain=True)
    assert [(h.doc_id, h.rank) for h in answer.hits] == [(h.doc_id, r) for r, h in enumerate(expected, 1)]
    assert [h.score for h in answer.hits] == pytest.approx([h.score for h in expected])
    assert set(answer.hits[0].explanation.retrievers) == {"bm25", "multivector"}
    assert answer.timings_ms["total"] > 0
    body = post(server, "/v1/search", {"query": "cat fish", "k": 3, "pipeline": "fused", "explain": True}).json()
    assert [h["doc_id"] for h in body["hits"]] == [h.doc_id for h in answer.hits]
    assert body["hits"][0]["explanation"]["retrievers"]["bm25"]["rank"] is not None
    # The default pipeline is the first one served; k beyond the collection returns all of it.
    default = post(server, "/v1/search", {"query": "dog", "k": 50}).json()
    assert default["pipeline"] == "bm25" and len(default["hits"]) == 3  # d1, d3, d4 contain "dog"


def test_per_request_fusion_weights_change_only_that_request(server):
    with BraidClient(server.grpc) as client:
        bm25_only = client.search("cat fish", k=4, pipeline="fused", weights={"multivector": 0.0})
        plain = client.search("cat fish", k=4, pipeline="fused")
        again = client.search("cat fish", k=4, pipeline="fused")
    alone = post(server, "/v1/search", {"query": "cat fish", "k": 4}).json()
    assert [h.doc_id for h in bm25_only.hits][:2] == [h["doc_id"] for h in alone["hits"]][:2]
    assert [h.score for h in plain.hits] == [h.score for h in again.hits]


def test_batch_search_answers_in_request_order(server):
    requests = [pb.SearchRequest(query=q, k=2) for q in ("cat", "bird", "dog")]
    with BraidClient(server.grpc) as client:
        batch = client.batch_search(requests)
        single = [client.search(q, k=2) for q in ("cat", "bird", "dog")]
    assert [[h.doc_id for h in r.hits] for r in batch.responses] == [[h.doc_id for h in r.hits] for r in single]
    body = post(
        server, "/v1/batch-search", {"requests": [{"query": "bird", "k": 1}, {"query": "a", "weights": {"bm25": 1}}]}
    )
    assert body.status_code == 400 and "request 1: pipeline 'bm25' has a single" in body.json()["error"]["message"]
    assert body.json()["error"]["status"] == "FAILED_PRECONDITION"


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"query": ""}, "empty query"),
        ({"query": "cat", "k": 51}, "k must be between 1 and 50 (0 or absent: 10)"),
        ({"query": "cat", "k": -1}, "k must be between"),
        ({"query": "cat", "pipeline": "fused", "weights": {"splade": 1.0}}, "allowed: bm25, multivector"),
        ({"query": "cat", "pipeline": "fused", "weights": {"bm25": -1.0}}, "finite number >= 0"),
        ({"query": "x" * 3000}, "at most 2048"),
    ],
)
def test_invalid_fields_are_invalid_argument_with_a_message(server, request_fields, message):
    with BraidClient(server.grpc) as client:
        error = rpc_error(lambda: client.stub.Search(pb.SearchRequest(**request_fields), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.details()
    # Over HTTP, what the OpenAPI schema states (lengths, k's range, weights >= 0) is refused by it, the rest (names
    # of retrievers, what a pipeline supports) by the core with the same message as over gRPC: 400 either way.
    response = post(server, "/v1/search", request_fields)
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_what_a_pipeline_cannot_do_is_failed_precondition(server):
    # The same fields are fine on a pipeline with the stage: the request is well formed, this pipeline lacks it.
    cases = [
        ({"query": "cat", "rerank_depth": 5}, "has no reranker"),
        ({"query": "cat", "weights": {"bm25": 1}}, "single"),
    ]
    with BraidClient(server.grpc) as client:
        for fields, message in cases:
            error = rpc_error(lambda fields=fields: client.stub.Search(pb.SearchRequest(**fields), timeout=10))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and message in error.details()
            response = post(server, "/v1/search", fields)
            assert response.status_code == 400 and message in response.json()["error"]["message"]
            assert response.json()["error"]["status"] == "FAILED_PRECONDITION"
        # Depth 0 asks for no reranking: every pipeline can do that.
        assert [h.doc_id for h in client.stub.Search(pb.SearchRequest(query="cat", rerank_depth=0)).hits]
    # Over HTTP, weights may only name retrievers of the served pipelines (the schema lists them).
    assert post(server, "/v1/search", {"query": "cat", "weights": {"nope": 1}}).status_code == 400


def test_unknown_pipelines_and_bad_bodies_are_4xx(server):
    with BraidClient(server.grpc) as client:
        error = rpc_error(lambda: client.search("cat", pipeline="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "served here: bm25, fused" in error.details()
    # The HTTP schema lists the served pipelines; an unknown name is NOT_FOUND naming them, as over gRPC.
    unknown = post(server, "/v1/search", {"query": "cat", "pipeline": "nope"})
    assert unknown.status_code == 404 and "served here: bm25, fused" in unknown.json()["error"]["message"]
    documents = {"documents": [{"id": "a", "text": "b"}]}
    assert post(server, "/v1/pipelines/nope/documents", documents, Authorization=f"Bearer {API_KEY}").status_code == 404
    assert post(server, "/v1/search", {"query": "cat", "colour": "red"}).status_code == 400
    raw = httpx.post(f"{server.http}/v1/search", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["status"] == "INVALID_ARGUMENT"
    slow = post(server, "/v1/search", {"query": "cat"}, **{"X-Request-Timeout-Ms": "soon"})
    # The header is typed in the schema (a number >= 1): anything else is a 400 in braid's error object.
    assert slow.status_code == 400 and "X-Request-Timeout-Ms" in slow.json()["error"]["message"]


def test_writes_need_the_api_key_compared_exactly(server):
    with BraidClient(server.grpc) as anonymous, BraidClient(server.grpc, api_key="wrong-key-0123456789") as wrong:
        assert rpc_error(lambda: anonymous.reload()).code() == grpc.StatusCode.UNAUTHENTICATED
        assert rpc_error(lambda: wrong.reload()).code() == grpc.StatusCode.UNAUTHENTICATED
        assert anonymous.search("cat").hits  # reads are open unless the server says --auth-reads
    assert post(server, "/v1/reload", {}).status_code == 401
    assert post(server, "/v1/reload", {}, **{"X-API-Key": "nope"}).status_code == 401
    reloaded = post(server, "/v1/reload", {"pipeline": "bm25"}, Authorization=f"Bearer {API_KEY}")
    assert reloaded.status_code == 200 and reloaded.json()["pipelines"][0]["name"] == "bm25"
    with BraidClient(server.grpc, api_key=API_KEY) as admin:
        error = rpc_error(lambda: admin.add_documents("fused", [("d1", "cat")]))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "in the collection already" in error.details()


def test_health_reflection_pipelines_and_metrics(server):
    with BraidClient(server.grpc) as client:
        assert client.health_status() == "SERVING" and client.health_status("braid.v1.Braid") == "SERVING"
        listing = client.list_pipelines()
        stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        services = {s.name for s in next(answers).list_services_response.service}
    assert {"braid.v1.Braid", "grpc.health.v1.Health"} <= services
    assert listing.default_pipeline == "bm25" and [p.name for p in listing.pipelines] == ["bm25", "fused"]
    fused = listing.pipelines[1]
    assert fused.fusion == "rrf" and {i.kind for i in fused.indexes} == {"bm25", "multivector"} and fused.doc_count == 4
    assert httpx.get(f"{server.http}/v1/pipelines").json()["pipelines"][0]["name"] == "bm25"
    assert "/v1/search" in httpx.get(f"{server.http}/openapi.json").json()["paths"]
    metrics = httpx.get(f"{server.http}/metrics").text
    assert 'braid_requests_total{code="OK",method="Search",protocol="grpc"}' in metrics
    assert 'braid_stage_seconds_count{pipeline="fused",stage="fusion"}' in metrics
    assert "braid_queue_depth 0.0" in metrics
    # Memory: the process's RSS, and the fused pipeline's indexes as opened (multivector token vectors mapped).
    resident = re.search(r"^braid_resident_bytes (\S+)$", metrics, re.MULTILINE)
    assert resident and float(resident.group(1)) > 50e6
    mapped = re.search(r'^braid_index_memory_bytes\{how="mapped",pipeline="fused"\} (\S+)$', metrics, re.MULTILINE)
    loaded = re.search(r'^braid_index_memory_bytes\{how="loaded",pipeline="fused"\} (\S+)$', metrics, re.MULTILINE)
    assert mapped and loaded and float(mapped.group(1)) > 0 and float(loaded.group(1)) > 0
    assert re.search(r'^braid_query_encoding_cache\{what="entries"\} \S+$', metrics, re.MULTILINE)
    assert re.search(r'^braid_result_cache\{pipeline="fused",what="misses"\} [1-9]', metrics, re.MULTILINE)


def test_overload_is_rejected_at_once_and_deadlines_are_kept(service_data):
    running = ServerThread(make_core(service_data, max_concurrency=2))
    release = threading.Event()
    try:
        held = [running.submit(running.core.call(lambda _d: release.wait(30))) for _ in range(2)]
        while running.core.admission.admitted < 2:
            time.sleep(0.01)
        with BraidClient(running.grpc) as client:
            tick = time.perf_counter()
            error = rpc_error(lambda: client.search("cat"))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrency limit of 2" in error.details()
            assert time.perf_counter() - tick < 2  # refused, not queued
            assert post(running, "/v1/search", {"query": "cat"}).status_code == 429
            release.set()
            assert all(future.result(10) for future in held)
            assert client.search("cat").hits
        # A deadline that passes while the work runs: 504 at the deadline, not when the work ends.
        slow = running.submit(running.core.call(lambda _d: time.sleep(1.5), time.monotonic() + 0.2))
        with pytest.raises(Exception, match="deadline exceeded"):
            slow.result(10)
        time.sleep(1.5)
    finally:
        release.set()
        running.stop()


def test_hot_reload_under_traffic_fails_no_request(server):
    errors: list[BaseException] = []
    counts = {"grpc": 0, "http": 0}
    stop = threading.Event()
    expected = [h.doc_id for h in BraidClient(server.grpc).search("cat fish", k=4, pipeline="fused").hits]

    def grpc_traffic() -> None:
        with BraidClient(server.grpc) as client:
            while not stop.is_set():
                try:
                    hits = [h.doc_id for h in client.search("cat fish", k=4, pipeline="fused").hits]
                    assert hits == expected
                    counts["grpc"] += 1
                except BaseException as error:
                    errors.append(error)

    def http_traffic() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                try:
                    response = client.post(f"{server.http}/v1/search", json={"query": "cat fish", "pipeline": "fused"})
                    assert response.status_code == 200, response.text
                    counts["http"] += 1
                except BaseException as error:
                    errors.append(error)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(grpc_traffic), pool.submit(grpc_traffic), pool.submit(http_traffic)]
        before = server.core.registry.slot("fused").generation.number
        with BraidClient(server.grpc, api_key=API_KEY) as admin:
            for _ in range(3):
                time.sleep(0.3)
                admin.reload("fused")
        time.sleep(0.3)
        stop.set()
        for future in futures:
            future.result()
    assert not errors, errors[:3]
    assert counts["grpc"] > 10 and counts["http"] > 5
    assert server.core.registry.slot("fused").generation.number == before + 3


def test_writes_are_searchable_when_acknowledged_by_every_pipeline_and_survive_a_restart(service_data, tmp_path):
    dataset, index_root, fused = service_data
    copy = tmp_path / "indexes"
    shutil.copytree(index_root, copy)
    running = ServerThread(make_core((dataset, copy, fused), ("multivector", "bm25")))
    try:
        with BraidClient(running.grpc, api_key=API_KEY) as client:
            added = client.add_documents("multivector", [("d9", "a zebra grazing on the savanna")])
            assert added.doc_count == 5 and added.generation == 1  # no reload: the same generation serves it
            # Written through one pipeline, searched by every one, at once.
            assert client.search("zebra savanna", k=1).hits[0].doc_id == "d9"
            assert client.search("zebra savanna", k=1, pipeline="bm25").hits[0].doc_id == "d9"
            error = rpc_error(lambda: client.add_documents("multivector", [("d9", "again")]))
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS and "in the collection already" in error.details()
            replaced = client.upsert_documents("bm25", [("d9", "a giraffe browsing acacia trees"), ("d1", "zebra")])
            assert replaced.doc_count == 5
            assert client.search("giraffe acacia", k=1, pipeline="bm25").hits[0].doc_id == "d9"
            assert [h.doc_id for h in client.search("zebra", k=5, pipeline="bm25").hits] == ["d1"]
            deleted = client.delete_documents("bm25", ["d9"])
            assert deleted.doc_count == 4
            assert "d9" not in [h.doc_id for h in client.search("giraffe acacia", k=4, pipeline="multivector").hits]
            error = rpc_error(lambda: client.delete_documents("bm25", ["d9", "d2"]))
            assert error.code() == grpc.StatusCode.NOT_FOUND and "d9" in error.details()
        upsert = httpx.put(
            f"{running.http}/v1/pipelines/bm25/documents",
            json={"documents": [{"id": "h1", "title": "Okapi", "text": "an okapi in the forest"}]},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        assert upsert.status_code == 200 and upsert.json() == {"doc_count": 5, "generation": 1}
        assert post(running, "/v1/search", {"query": "okapi forest", "k": 1}).json()["hits"][0]["doc_id"] == "h1"
    finally:
        running.stop()
    # A new server over the same folders: every acknowledged write is there.
    restarted = ServerThread(make_core((dataset, copy, fused), ("bm25",)))
    try:
        with BraidClient(restarted.grpc) as client:
            assert [h.doc_id for h in client.search("zebra", k=5).hits] == ["d1"]
            assert client.search("okapi forest", k=1).hits[0].doc_id == "h1"
            assert "d9" not in [h.doc_id for h in client.search("giraffe acacia", k=5).hits]
            assert client.list_pipelines().pipelines[0].doc_count == 5
    finally:
        restarted.stop()


def test_shutdown_drains_in_flight_requests_and_refuses_new_ones(service_data):
    running = ServerThread(make_core(service_data))
    release = threading.Event()
    in_flight = running.submit(running.core.call(lambda _d: release.wait(30) and "finished"))
    while running.core.admission.admitted < 1:
        time.sleep(0.01)
    stopping = threading.Thread(target=running.stop)
    stopping.start()
    time.sleep(0.3)
    with BraidClient(running.grpc) as client:
        error = rpc_error(lambda: client.search("cat", timeout=5))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    release.set()
    assert in_flight.result(10) == "finished"
    stopping.join(20)
    assert not stopping.is_alive()


def test_filters_and_metadata_over_both_protocols(tmp_path):
    from braid.common.collection_writer import stage_collection
    from braid.common.dataset_resolver import open_dataset_dir
    from braid.pipelines.pipeline import load_pipeline
    from braid.service.core import AuthConfig, SearchCore

    source = tmp_path / "docs.jsonl"
    rows = [{"id": f"n{i}", "text": f"cat number {i}", "lang": ("en", "de")[i % 2], "year": 2000 + i} for i in range(6)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    folder = stage_collection("notes", source, tmp_path / "c", fields={"lang": "keyword", "year": "integer"}).publish()
    core = SearchCore(open_dataset_dir(folder), [load_pipeline("bm25")], tmp_path / "idx", auth=AuthConfig(API_KEY),
                      build_missing=True)  # fmt: skip
    running = ServerThread(core)
    try:
        recent = {"field": "year", "gte": 2003}
        with BraidClient(running.grpc, api_key=API_KEY) as client:
            request = pb.SearchRequest(query="cat", k=10)
            request.filter.update({"and": [recent, {"field": "lang", "eq": "de"}]})
            assert sorted(h.doc_id for h in client.stub.Search(request).hits) == ["n3", "n5"]
            document = pb.Document(id="n9", text="cat late")
            document.metadata.update({"lang": "de", "year": 2024})
            client.stub.UpsertDocuments(
                pb.AddDocumentsRequest(pipeline="bm25", documents=[document]),
                metadata=[("authorization", f"Bearer {API_KEY}")],
            )
            assert sorted(h.doc_id for h in client.stub.Search(request).hits) == ["n3", "n5", "n9"]
            wrong = pb.Document(id="n10", text="cat")
            wrong.metadata.update({"year": "soon"})
            error = rpc_error(
                lambda: client.stub.UpsertDocuments(
                    pb.AddDocumentsRequest(pipeline="bm25", documents=[wrong]),
                    metadata=[("authorization", f"Bearer {API_KEY}")],
                )
            )
            assert (
                error.code() == grpc.StatusCode.INVALID_ARGUMENT
                and "field 'year' is declared integer" in error.details()
            )
        body = {"query": "cat", "k": 10, "filter": {"and": [recent, {"field": "lang", "eq": "de"}]}}
        assert sorted(h["doc_id"] for h in post(running, "/v1/search", body).json()["hits"]) == ["n3", "n5", "n9"]
        put = httpx.put(
            f"{running.http}/v1/pipelines/bm25/documents",
            json={"documents": [{"id": "n3", "text": "cat moved", "metadata": {"lang": "en", "year": 2003}}]},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        assert put.status_code == 200
        assert sorted(h["doc_id"] for h in post(running, "/v1/search", body).json()["hits"]) == ["n5", "n9"]
        bad = post(running, "/v1/search", {"query": "cat", "filter": {"field": "year", "gt": "x"}})
        assert bad.status_code == 400 and "'x' is not of its type, integer" in bad.json()["error"]["message"]
    finally:
        running.stop()


def test_documents_collection_status_and_contributions_agree_over_both_protocols(service_data, tmp_path):
    dataset, index_root, fused = service_data
    copy = tmp_path / "tiny"
    shutil.copytree(dataset, copy)  # its own collection: the write below must not reach the shared one
    running = ServerThread(make_core((copy, index_root.parent / "own-indexes", fused), ("bm25", "fused")))
    try:
        with BraidClient(running.grpc, api_key=API_KEY) as client:
            found = client.stub.GetDocuments(pb.GetDocumentsRequest(ids=["d2", "d1", "d2"])).documents
            assert [(d.id, d.title, d.text) for d in found] == [("d2", "cat", "cat fish"), ("d1", "", "cat dog")]
            over_http = post(running, "/v1/documents/get", {"ids": ["d2", "d1", "d2"]}).json()["documents"]
            assert [(d["id"], d["title"], d["text"], d["metadata"]) for d in over_http] == [
                ("d2", "cat", "cat fish", {}),
                ("d1", "", "cat dog", {}),
            ]
            error = rpc_error(lambda: client.stub.GetDocuments(pb.GetDocumentsRequest(ids=["d1", "ghost"])))
            assert error.code() == grpc.StatusCode.NOT_FOUND and "ghost" in error.details()

            document = pb.Document(id="d9", title="new", text="cat")
            document.metadata.update({"source": "test"})
            client.stub.UpsertDocuments(
                pb.AddDocumentsRequest(pipeline="bm25", documents=[document]),
                metadata=[("authorization", f"Bearer {API_KEY}")],
            )
            status = client.stub.ListPipelines(pb.ListPipelinesRequest()).collection
            assert (status.name, status.documents, status.writes, status.segments) == ("tiny", 5, 1, 1)
            assert [(w.seq, w.upserted, w.deleted) for w in status.recent_writes] == [(1, 1, 0)]
            assert status.last_write_at.endswith("Z")
            http_status = httpx.get(f"{running.http}/v1/pipelines", timeout=30).json()["collection"]
            assert http_status["recent_writes"] == [{"seq": 1, "upserted": 1, "deleted": 0}]
            assert http_status["last_write_at"] == status.last_write_at and http_status["documents"] == 5
            written = client.stub.GetDocuments(pb.GetDocumentsRequest(ids=["d9"])).documents[0]
            assert written.title == "new" and dict(written.metadata) == {"source": "test"}

            hits = client.stub.Search(pb.SearchRequest(query="cat fish", pipeline="fused", explain=True)).hits
            body = {"query": "cat fish", "pipeline": "fused", "explain": True}
            http_hits = post(running, "/v1/search", body).json()["hits"]
            for hit, http_hit in zip(hits, http_hits, strict=True):
                terms = {name: source.contribution for name, source in hit.explanation.retrievers.items()}
                http_terms = {n: s["contribution"] for n, s in http_hit["explanation"]["retrievers"].items()}
                assert terms == http_terms and sum(terms.values()) == pytest.approx(hit.explanation.fused_score)
    finally:
        running.stop()
