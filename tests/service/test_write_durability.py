"""Nothing acknowledged is lost: a served collection killed with SIGKILL during a stream of writes, restarted."""

from __future__ import annotations

import shutil

from benchmarks.crash_writes import run


def test_sigkill_during_writes_loses_no_acknowledged_batch_and_half_applies_none(service_data, tmp_path):
    dataset, index_root, _ = service_data
    copy = tmp_path / "indexes"
    shutil.copytree(index_root, copy)
    report = run(str(dataset), str(copy), ["bm25"], kills=2, seconds=(1.0, 2.0), log=tmp_path / "serve.log")
    assert report.kills == 2 and report.acknowledged >= 5
    assert report.lost == [] and report.half_applied == []
