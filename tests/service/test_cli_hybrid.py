"""``braid search --explain``, ``braid eval`` comparing pipelines, and ``braid tune``, end to end."""

from __future__ import annotations

import json

import pytest

from braid.pipelines.pipeline import load_pipeline
from braid.service.cli.main import main
from tests.pipelines.test_hybrid_pipeline import HYBRID


@pytest.fixture
def hybrid_file(tmp_path):
    path = tmp_path / "hybrid.toml"
    path.write_text(HYBRID)
    return path


def test_search_explain_prints_each_retrievers_rank(tiny_beir, tmp_path, hybrid_file, capsys):
    args = ["search", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--explain", "-k", "3", "cat fish"]) == 0
    out = capsys.readouterr().out
    assert "beir #1 (" in out and "lucene #1 (" in out and "fused " in out
    assert main([*args, "--explain", "--json", "-k", "3", "cat fish"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["doc_id"] == "d2" and rows[0]["retrievers"]["beir"]["rank"] == 1
    assert main([*args, "-k", "5", "cat"]) == 2
    assert "k must be between 1 and the collection's 4 documents, got 5" in capsys.readouterr().err


def test_eval_compares_pipelines_with_significance_stage_latency_and_plot(tiny_beir, tmp_path, hybrid_file, capsys):
    out_dir = tmp_path / "results"
    args = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(out_dir)]
    assert main([*args, "--pipeline", "bm25", "--pipeline", str(hybrid_file), "--latency-sample", "4"]) == 0
    table = capsys.readouterr().out
    assert "two-sided paired t-test" in table and "two-bm25  retriever.lucene" in table
    assert main([*args, "--pipeline", "bm25", "--pipeline", str(hybrid_file), "--json", "--latency-sample", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]
    assert rows[0]["p_values"] == {}
    assert set(rows[1]["p_values"]) == {"ndcg@10", "recall@100", "mrr@10"}
    assert all(0.0 <= p <= 1.0 for p in rows[1]["p_values"].values())
    assert {"retriever.beir", "retriever.lucene", "fusion"} <= set(rows[1]["stage_latency_ms"])
    png = out_dir / "tiny" / "quality_latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out_dir / "tiny" / "two-bm25.test.trec").is_file()


def test_tune_saves_weights_into_the_pipeline_file(tiny_beir, tmp_path, hybrid_file, capsys):
    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    args = ["tune", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--step", "0.5", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["datasets"] == ["tiny/train"] and best["metric"] == "ndcg@10" and 0.0 <= best["value"] <= 1.0
    tuned = load_pipeline(str(hybrid_file))
    assert tuned.tuned["value"] == best["value"]
    assert set(tuned.fusion.weights) == {"beir", "lucene"} and sum(tuned.fusion.weights.values()) == pytest.approx(1)
    assert hybrid_file.read_text().startswith("# [fusion] tuned by `braid tune` on tiny/train")
    # The tuned pipeline, evaluated on the split it was tuned on, scores what the tuner measured.
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "train", "--json", "--latency-sample", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["ndcg@10"] == pytest.approx(best["value"], abs=1e-6)
    assert main([*args, "--split", "test"]) == 2
    assert "tuning on the test split would leak" in capsys.readouterr().err
    assert main([*args, "--step", "0.3"]) == 2
    assert main(["tune", "--dataset", str(tiny_beir), "--pipeline", "bm25"]) == 2
    assert "give --output FILE" in capsys.readouterr().err


def test_tune_per_dataset_saves_the_collections_own_fusion(tiny_beir, tmp_path, hybrid_file, capsys):
    (tiny_beir / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td4\t1\nq3\td3\t1\n")
    before = load_pipeline(str(hybrid_file))
    args = ["tune", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--pipeline", str(hybrid_file)]
    assert main([*args, "--split", "dev", "--per-dataset", "--step", "0.5", "--rrf-k", "1", "--json"]) == 0
    (best,) = json.loads(capsys.readouterr().out)
    assert best["datasets"] == ["tiny/dev"]
    tuned = load_pipeline(str(hybrid_file))
    # [fusion] is untouched; the collection's own setting holds what the tuner found best.
    assert tuned.fusion == before.fusion and tuned.tuned == before.tuned
    assert tuned.per_dataset["tiny"].fusion.to_dict() == best["fusion"]
    assert tuned.per_dataset["tiny"].tuned["value"] == best["value"]
    assert "[per_dataset.tiny.fusion]" in hybrid_file.read_text()
    ev = ["eval", "--dataset", str(tiny_beir), "--index-dir", str(tmp_path / "idx"), "--output", str(tmp_path / "r")]
    assert main([*ev, "--pipeline", str(hybrid_file), "--split", "dev", "--json", "--latency-sample", "0"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ndcg@10"] == pytest.approx(best["value"], abs=1e-6)
    assert row["fusion"] == {**best["fusion"], "per_dataset": True}
