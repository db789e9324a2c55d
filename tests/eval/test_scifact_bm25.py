"""The published Pyserini BEIR figure, reproduced end to end through the CLI."""

from __future__ import annotations

import json

import pytest

from braid.service.cli.main import main


@pytest.mark.slow
def test_bm25_scifact_reproduces_pyserini_beir(shared_data, tmp_path, capsys):
    code = main(
        [
            "eval",
            "--dataset",
            "scifact",
            "--pipeline",
            "bm25",
            "--data-dir",
            str(shared_data),
            "--index-dir",
            str(tmp_path / "indexes"),
            "--output",
            str(tmp_path / "results"),
            "--json",
            "--latency-sample",
            "0",
        ]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["queries"] == 300
    assert row["ndcg@10"] == pytest.approx(0.679, abs=0.002)
    assert row["recall@100"] == pytest.approx(0.9253, abs=0.002)
