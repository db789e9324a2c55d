"""The GPU speed benchmark runs end to end (tiny shape, exact torch backend, CPU) and reports every figure."""

from __future__ import annotations

from benchmarks.block_attention_speed import main


def test_benchmark_reports_attention_and_whole_model_rows(tmp_path):
    output = tmp_path / "speed.json"
    args = "--preset tiny --docs 2 5 --doc-tokens 12 --jitter 3 --repeats 1 --dtype float32 --backends torch"
    report = main([*args.split(), "--model-backend", "torch", "--output", str(output)])
    assert output.is_file() and [row["docs"] for row in report["attention"]] == [2, 5]
    for row in report["attention"]:
        assert row["sdpa_causal_ms"] > 0 and row["torch_blocks_ms"] > 0 and row["torch_blocks_vs_sdpa"] > 0
    for row in report["model"]:
        assert row["block_warm_ms"] > 0 and row["cache_gb"] >= 0 and 0 < row["block_cold_tflop"] < row["dense_tflop"]
    assert report["early_exit_layer"] == 1  # two thirds of three layers, counted from 0
