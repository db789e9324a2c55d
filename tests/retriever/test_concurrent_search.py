"""Lucene searches from several threads answer exactly what they answer one at a time.

pyjnius shares one method object between all instances of a Java class and binds it by mutation, so without
:func:`~braid.indexer.lucene_jvm.java_calls` two threads building queries on two builders (or searching two
IndexSearchers) could swap objects mid-call and return another query's hits (this test failed that way).
"""

from __future__ import annotations

import json
import random
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from braid.indexer.splade_index import write_impact_index
from braid.retriever.impact_search import ImpactSearcher

VOCABULARY = [f"t{i}" for i in range(300)]


@pytest.fixture
def frequent_thread_switches():
    """Threads hand over the GIL every microsecond instead of every 5 ms, so that a switch between binding a method
    and calling it (the race) happens on every run, not only on a loaded machine."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def test_concurrent_impact_searches_on_two_searchers_match_sequential_ones(tmp_path, frequent_thread_switches):
    rng = random.Random(7)
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    with (vectors / "v.jsonl").open("w") as handle:
        for number in range(400):
            terms = rng.sample(VOCABULARY, 30)
            vector = {term: rng.randint(1, 60) for term in terms}
            handle.write(json.dumps({"id": f"d{number}", "contents": "", "vector": vector}) + "\n")
    write_impact_index(vectors, tmp_path / "impact", threads=1)
    searchers = [ImpactSearcher(tmp_path / "impact", 400) for _ in range(2)]
    queries = [{term: rng.randint(1, 100) for term in rng.sample(VOCABULARY, 60)} for _ in range(300)]
    expected = [searchers[0].search(query, 50) for query in queries]
    jobs = [(number % 2, query) for number, query in enumerate(queries)] * 2
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda job: searchers[job[0]].search(job[1], 50), jobs))
    assert answers == expected * 2
