from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid.indexer.atomic_dir import atomic_directory
from braid.indexer.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parents[2]


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "idx"
    with pytest.raises(RuntimeError), atomic_directory(final) as scratch:
        (scratch / "part").write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_replaces_existing_only_on_success(tmp_path):
    final = tmp_path / "idx"
    with atomic_directory(final) as scratch:
        (scratch / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(final, overwrite=True) as scratch:
        (scratch / "v").write_text("2")
        raise RuntimeError("crash")
    assert (final / "v").read_text() == "1"
    with atomic_directory(final, overwrite=True) as scratch:
        (scratch / "v").write_text("2")
    assert (final / "v").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]


def test_sigkill_mid_build_leaves_no_complete_index_and_rebuild_succeeds(tmp_path):
    data = tmp_path / "big"
    (data / "qrels").mkdir(parents=True)
    with (data / "corpus.jsonl").open("w") as handle:
        for i in range(60000):
            handle.write(
                json.dumps({"_id": str(i), "text": f"document {i} about topic{i % 97} and item{i % 13}"}) + "\n"
            )
    (data / "queries.jsonl").write_text('{"_id": "q", "text": "topic5"}\n')
    (data / "qrels" / "test.tsv").write_text("q\t5\t1\n")
    out = tmp_path / "index"
    command = [sys.executable, "-m", "braid", "index", "build", "--dataset", str(data), "--output", str(out)]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scratch = tmp_path / f".index.tmp-{process.pid}"
    deadline = time.time() + 60
    while not any(scratch.glob("*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists() and scratch.exists()
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert (out / MANIFEST_NAME).is_file()
    assert json.loads((out / MANIFEST_NAME).read_text())["doc_count"] == 60000
    assert not scratch.exists(), "the dead build's scratch folder was not cleaned up"
