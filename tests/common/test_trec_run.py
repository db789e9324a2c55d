from __future__ import annotations

import pytest

from braid.common.errors import DataFormatError
from braid.common.trec_run import drop_self_hits, read_run, write_run


def test_round_trip_ranks_by_score(tmp_path):
    path = tmp_path / "runs" / "r.trec"
    write_run(path, {"q1": {"a": 0.5, "b": 2.0}, "q2": {"c": 1.0}}, tag="my run")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 b 1 2.000000 my_run"
    assert lines[1] == "q1 Q0 a 2 0.500000 my_run"
    assert read_run(path) == {"q1": {"b": 2.0, "a": 0.5}, "q2": {"c": 1.0}}
    assert [p.name for p in path.parent.iterdir()] == ["r.trec"]


def test_malformed_run_line(tmp_path):
    path = tmp_path / "bad.trec"
    path.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 high t\n")
    with pytest.raises(DataFormatError, match=r"bad.trec:2: score must be a number"):
        read_run(path)


def test_drop_self_hits():
    assert drop_self_hits({"q1": {"q1": 9.0, "d": 1.0}}) == {"q1": {"d": 1.0}}
