"""Repeated searches are answered from each pipeline's result cache, and never with a stale answer after a write."""

from __future__ import annotations

import shutil

from braid.common.dataset_resolver import open_dataset_dir
from braid.pipelines.spec import load_pipeline
from braid.service.core import NewDocument, SearchCore, SearchQuery
from tests.service.conftest import make_core


def test_a_repeated_search_is_cached_and_a_write_is_seen_at_once(service_data, tmp_path):
    dataset, index_root, fused = service_data
    copy = tmp_path / "indexes"
    shutil.copytree(index_root, copy)
    core = make_core((dataset, copy, fused), ("bm25", "fused"))
    try:
        query = SearchQuery("zebra savanna", k=3, pipeline="fused")
        first = core.search(query)
        cache = core.registry.slot("fused").generation.pipeline.results
        again = core.search(query)
        assert cache.hits == 1 and again.timings_ms.keys() == {"result_cache"}
        assert [(h.doc_id, h.score) for h in again.hits] == [(h.doc_id, h.score) for h in first.hits]
        assert "d9" not in [h.doc_id for h in again.hits]
        # Other k, weights or filters are other requests.
        core.search(SearchQuery("zebra savanna", k=2, pipeline="fused"))
        assert cache.hits == 1
        core.upsert_documents("bm25", [NewDocument("d9", "a zebra grazing on the savanna")])
        after = core.search(query)  # acknowledged above: the same request must see it
        assert after.hits[0].doc_id == "d9" and "result_cache" not in after.timings_ms
        assert core.search(query).hits[0].doc_id == "d9" and cache.hits == 2
        core.delete_documents("fused", ["d9"])
        assert "d9" not in [h.doc_id for h in core.search(query).hits]
        # A reload opens the pipeline again, with an empty cache.
        core.reload("fused")
        assert core.registry.slot("fused").generation.pipeline.results is not cache
    finally:
        core.close()


def test_the_result_cache_can_be_turned_off(service_data):
    dataset, index_root, _ = service_data
    off = SearchCore(open_dataset_dir(dataset), [load_pipeline("bm25")], index_root, result_cache_entries=0)
    try:
        off.search(SearchQuery("cat"))
        assert off.search(SearchQuery("cat")).timings_ms.keys() != {"result_cache"}
        assert off.registry.slot("bm25").generation.pipeline.results is None
    finally:
        off.close()
