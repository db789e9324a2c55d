"""Sharded serving on Ray Serve (local Ray, loopback): shard and broker deployments give the same answers (and the
same errors) as one process, a killed replica costs no request when each shard has two, and a reload or a document
update switches every shard to a new generation or none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import ray  # before braid starts its local cluster: loopback binding must not depend on import order

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.common.ray_cluster import RAY_CLI_ENV, ray_cli_hint
from braid.indexer.build_config import parse_build_config
from braid.indexer.build_job import BuildJob
from braid.indexer.multivector_index import live_doc_ids
from braid.indexer.shard_routing import home_shard
from braid.pipelines.pipeline import load_pipeline
from braid.service.core import AuthConfig, SearchCore
from braid.service.errors import ShardUnavailable, status_of
from braid.service.limits import ServiceLimits
from tests.conftest import write_sample
from tests.service.conftest import ServerThread

SHARDS = 2
KEY = "ray-test-key"


@pytest.fixture(scope="module")
def ray_served(shared_data, tmp_path_factory):
    """A braid server whose bm25 pipeline searches 2 Ray Serve shard deployments of 2 replicas each, and an
    in-process server over the unsharded index of the same collection."""
    root = tmp_path_factory.mktemp("ray-serving")
    write_sample(shared_data / "scifact", root / "sample", 40, 10)
    dataset = open_dataset_dir(root / "sample")
    raw = {
        "output": str(root / "out"),
        "collection": {"dataset": str(root / "sample"), "shard_size": 10, "shards": SHARDS},
        "index": [{"kind": "bm25"}, {"kind": "multivector"}],
    }
    BuildJob(parse_build_config(raw, "test"), dataset).run()
    from braid.service.ray_broker import BrokerCore, broker_factory
    from braid.service.ray_serving import RayShards

    specs = [load_pipeline("bm25"), load_pipeline("multivector")]
    shards = RayShards("local", SHARDS, replicas=2, threads=1, timeout_s=20)
    try:
        # Writes wait for the next generation (every shard's and the broker's replicas) to come up: on 2 busy cores
        # that took 131 s (README) and once passed 120 s in the suite. This tests what a write does, not its speed.
        limits = ServiceLimits(default_timeout_s=300)
        shards.deploy(specs, dataset, root / "out", broker_factory(specs, dataset, root / "out", limits, shards))
        sharded = ServerThread(BrokerCore(shards, specs, limits, AuthConfig(api_key=KEY)))
        single = ServerThread(SearchCore(dataset, specs, root / "out"))
        yield dataset, shards, sharded, single, root / "out"
        sharded.stop()
        single.stop()
    finally:
        shards.close()


def search(server: ServerThread, query: str, k: int = 20, pipeline: str = "bm25") -> tuple[int, dict]:
    return post(server, "/v1/search", {"query": query, "k": k, "pipeline": pipeline})


def post(server: ServerThread, route: str, body: dict) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", "X-API-Key": KEY}
    request = urllib.request.Request(f"{server.http}{route}", data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def listening_sockets(root: int) -> dict[str, set[str]]:
    """Every address a process in ``root``'s tree listens on, by process name."""
    import psutil

    tree = psutil.Process(root)
    found: dict[str, set[str]] = {}
    for process in [tree, *tree.children(recursive=True)]:
        try:
            sockets = process.net_connections(kind="inet")
            name = process.name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        for sock in sockets:
            if sock.status == psutil.CONN_LISTEN:
                found.setdefault(name, set()).add(f"{sock.laddr.ip}:{sock.laddr.port}")
    return found


def test_ray_shards_bind_loopback_and_answer_as_one_process(ray_served):
    dataset, shards, sharded, single, _ = ray_served
    assert sharded.http.startswith("http://127.0.0.1:")
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    # Every socket of this process tree (the API, GCS, raylet, agents, every replica) listens on loopback only.
    listening = listening_sockets(os.getpid())
    assert any(name.startswith("ray::ServeRepli") for name in listening), listening
    loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    beyond = {name: {a for a in found if a.rpartition(":")[0] not in loopback} for name, found in listening.items()}
    assert not any(beyond.values()), beyond
    # Ray's own CLI reaches the cluster, as the README says (the ready record of braid serve --ray carries the line).
    gcs = ray.get_runtime_context().gcs_address
    assert ray_cli_hint(ray).endswith(f"ray status --address {gcs}")
    environment = {**os.environ, **RAY_CLI_ENV}
    ray_cli = Path(sys.executable).with_name("ray")
    status = subprocess.run([ray_cli, "status", "--address", gcs], env=environment, capture_output=True, text=True)
    assert status.returncode == 0 and "Resources" in status.stdout, status.stderr[-2000:]
    actors = subprocess.run(
        [ray_cli, "list", "actors", "--address", gcs], env=environment, capture_output=True, text=True, timeout=120
    )
    assert actors.returncode == 0 and "ServeReplica:braid-g1-shard-0" in actors.stdout, actors.stderr[-2000:]
    pids = shards.replica_pids()
    assert sorted(pids) == [0, 1] and all(len(found) == 2 for found in pids.values())
    brokers = shards.broker_pids()
    assert len(brokers) == 2  # the broker is a deployment of its own, with the shards' replica count
    # Shard and broker replicas are processes of their own, not this (the API) process.
    assert os.getpid() not in {pid for found in [*pids.values(), brokers] for pid in found}
    for query in dataset.queries().values():
        status, answer = search(sharded, query)
        expected_status, expected = search(single, query)
        assert status == expected_status == 200
        assert [h["doc_id"] for h in answer["hits"]] == [h["doc_id"] for h in expected["hits"]]
        pairs = zip(answer["hits"], expected["hits"], strict=True)
        assert all(abs(a["score"] - b["score"]) <= 1.5e-4 for a, b in pairs)


def test_errors_raised_in_the_broker_answer_as_one_process(ray_served):
    _, _, sharded, single, _ = ray_served
    for body in ({"query": "cat", "weights": {"bm25": 1.0}}, {"query": "cat", "rerank_depth": 5}):
        answers = []
        for server in (sharded, single):
            request = urllib.request.Request(
                f"{server.http}/v1/search", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
            )
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(request, timeout=30)
            answers.append((raised.value.code, json.loads(raised.value.read())))
        assert answers[0] == answers[1] and answers[0][0] == 400, answers  # FAILED_PRECONDITION, not a 500


def test_killing_a_replica_under_load_fails_no_request_with_two_replicas(ray_served):
    dataset, shards, sharded, _, _ = ray_served
    queries = list(dataset.queries().values())
    victim = shards.replica_pids()[0][0]
    answered: list[tuple[float, int]] = []  # (when, HTTP status)
    stop = threading.Event()

    def client(offset: int) -> None:
        sent = offset
        while not stop.is_set():
            status = search(sharded, queries[sent % len(queries)])[0]
            answered.append((time.monotonic(), status))
            sent += 1

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in clients:
        thread.start()
    time.sleep(1.0)
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    recovered = None
    # Load goes on until Ray Serve has replaced the replica and every client has been answered since the kill.
    while time.monotonic() - killed_at < 120:
        time.sleep(0.5)
        if recovered is None and shards.running[0] == 2 and victim not in shards.replica_pids()[0]:
            recovered = time.monotonic() - killed_at
        if recovered is not None and sum(when > killed_at for when, _ in answered) >= 16:
            break
    stop.set()
    for thread in clients:
        thread.join(30)
    statuses = [status for _, status in answered]
    assert recovered is not None, "Ray Serve did not replace the killed replica within 120 s"
    assert sum(when > killed_at for when, _ in answered) >= 16
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def test_a_shard_without_running_replica_fails_at_once_with_unavailable(ray_served):
    _, shards, _, _, _ = ray_served
    from braid.service.ray_serving import RemoteShard

    key = ("bm25", "/nowhere", ())
    down = RemoteShard(shards.handles[1], key, 1, timeout_s=20, running=lambda: 0)
    started = time.monotonic()
    with pytest.raises(ShardUnavailable, match="shard 1 has no running replica") as raised:
        down.search_partial("cat", 10)
    assert time.monotonic() - started < 1
    assert status_of(raised.value) == (grpc.StatusCode.UNAVAILABLE, 503)


def test_reload_and_updates_switch_every_shard_to_a_new_generation_or_none(ray_served):
    dataset, shards, sharded, _, out = ray_served
    queries = list(dataset.queries().values())[:5]

    def answers(pipeline: str = "bm25") -> list[list[tuple[str, float]]]:
        found = [search(sharded, query, pipeline=pipeline) for query in queries]
        assert {status for status, _ in found} == {200}
        return [[(hit["doc_id"], hit["score"]) for hit in answer["hits"]] for _, answer in found]

    before = answers()
    old_apps, old_pids = shards.current.app_names, shards.replica_pids()
    # A new generation that cannot deploy (shard 1's index is gone) changes nothing: generation 1 serves on.
    (index,) = (out / f"shard-1-of-{SHARDS}").glob("*/bm25-*")
    away = index.with_name(index.name + ".away")
    index.rename(away)
    try:
        with pytest.raises(BraidError, match=f"shard 1 of {SHARDS}"):
            sharded.core.reload()
    finally:
        away.rename(index)
    assert shards.generation == 1 and sorted(shards.serve.status().applications) == sorted(old_apps)
    assert answers() == before
    # Added documents go to their home shards' indexes (all shards or none) and a new generation of every shard
    # serves them: here they rank first for their own text, and nothing else changes.
    new = [
        {"id": "ray-new-0", "text": "Zebras migrate across the Serengeti following seasonal rains."},
        {"id": "ray-new-1", "text": "Glaciers in the Alps have lost half their ice volume since 1900."},
    ]
    tick = time.monotonic()
    status, added = post(sharded, "/v1/pipelines/multivector/documents", {"documents": new})
    print("ADD TOOK", time.monotonic() - tick)
    assert status == 200 and added == {"doc_count": 42, "generation": 2}, added
    assert shards.generation == 2
    assert answers() == before
    for document in new:
        status, found = search(sharded, document["text"], 3, "multivector")
        assert status == 200 and found["hits"][0]["doc_id"] == document["id"]
    for index in range(SHARDS):  # each new id is held by its home shard, and only there
        (path,) = (out / f"shard-{index}-of-{SHARDS}").glob("*/multivector-*")
        held = set(live_doc_ids(path)) & {document["id"] for document in new}
        assert held == {document["id"] for document in new if home_shard(document["id"], SHARDS) == index}
    new_pids = shards.replica_pids()
    assert not {pid for found in new_pids.values() for pid in found} & {p for found in old_pids.values() for p in found}
    # A refused update (an unknown id) changes no shard and deploys nothing.
    status, refused = post(sharded, "/v1/pipelines/multivector/documents/delete", {"ids": ["ray-new-0", "ghost"]})
    assert status == 404 and "'ghost'" in refused["error"]["message"] and shards.generation == 2, refused
    waited = time.monotonic()
    while set(old_apps) & set(shards.serve.status().applications) and time.monotonic() - waited < 30:
        time.sleep(0.5)
    assert sorted(shards.serve.status().applications) == sorted(shards.current.app_names)
    infos = {info["name"]: info for info in sharded.core.list_pipelines()}
    assert infos["multivector"]["generation"] == 2 and infos["multivector"]["updatable"]
    assert not infos["bm25"]["updatable"]  # BM25 updates go through a rebuild and a reload
