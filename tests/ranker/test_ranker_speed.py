"""The reranker speed benchmark runs end to end on a tiny model and, given two dtypes, times them interleaved and
reports the first's time over the second's for every measurement."""

from __future__ import annotations

import json

import pytest

from benchmarks.ranker_speed import MEASURES, main


def test_two_dtypes_are_timed_in_one_run_with_their_ratios(tmp_path, tiny_lm_dir, tiny_beir):
    output = tmp_path / "speed.json"
    argv = ["--model", str(tiny_lm_dir), "--dataset", str(tiny_beir), "--docs", "2", "3", "--doc-tokens", "8"]
    report = main([*argv, "--repeats", "2", "--dtype", "float32", "bfloat16", "--output", str(output)])
    assert json.loads(output.read_text()) == report
    assert [(row["dtype"], row["docs"]) for row in report["rows"]] == [
        ("float32", 2), ("bfloat16", 2), ("float32", 3), ("bfloat16", 3),
    ]  # fmt: skip
    by_key = {(row["dtype"], row["docs"]): row for row in report["rows"]}
    for docs in (2, 3):
        for measure in MEASURES:
            expected = by_key["float32", docs][measure] / by_key["bfloat16", docs][measure]
            name = f"{measure[:-2]}_float32_over_bfloat16_{docs}docs"
            assert report["ratios"][name] == round(expected, 3)
            # Each round's own ratio, low to high; with two rounds the ratio of medians (of means) lies between.
            low, high = report["round_ratios"][name]
            assert low <= high and low - 0.001 <= report["ratios"][name] <= high + 0.001


def test_the_rerank_stage_is_timed_beside_the_prompt(tmp_path, tiny_lm_dir, tiny_beir):
    argv = ["--model", str(tiny_lm_dir), "--dataset", str(tiny_beir), "--docs", "3", "--doc-tokens", "8"]
    report = main([*argv, "--repeats", "1", "--output", str(tmp_path / "speed.json")])
    (row,) = report["rows"]
    assert row["stage_cold_s"] > 0 and row["stage_warm_s"] > 0


def test_a_stage_pipeline_without_a_rerank_stage_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--stage", "bm25", "--output", str(tmp_path / "speed.json")])
    assert exit_info.value.code == 2 and "--stage bm25 has no rerank stage" in capsys.readouterr().err


def test_a_dtype_named_twice_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dtype", "float32", "float32", "--output", str(tmp_path / "speed.json")])
    assert exit_info.value.code == 2 and "--dtype lists a dtype twice" in capsys.readouterr().err
