"""Build jobs: sharded, resumable, verifiable builds that equal one-piece builds, in process and on Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.indexer.build_config import load_build_config
from braid.indexer.build_job import BuildJob
from braid.indexer.index_store import build_index
from braid.indexer.manifest import Manifest
from braid.indexer.verify import verify_index
from braid.pipelines.pipeline import open_index_retriever
from braid.service.cli.main import main
from tests.conftest import write_sample

REPO = Path(__file__).resolve().parents[2]
CONFIG = """
output = "{output}"
[collection]
dataset = "{dataset}"
shard_size = {shard_size}
{indexes}
"""


def write_config(folder: Path, dataset: Path, kinds: str, shard_size: int = 4, output: str = "out") -> Path:
    path = folder / "build.toml"
    indexes = "\n".join(f'[[index]]\nkind = "{kind}"' for kind in kinds.split())
    path.write_text(CONFIG.format(output=folder / output, dataset=dataset, shard_size=shard_size, indexes=indexes))
    return path


@pytest.fixture(scope="module")
def sample(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("job") / "sample"
    write_sample(shared_data / "scifact", root, 14, 5)
    return root


def hits(path: Path, queries: dict[str, str]) -> dict:
    retriever = open_index_retriever(path, {})
    return {
        qid: [(h.doc_id, round(h.score, 6)) for h in found]
        for qid, found in retriever.batch_search(queries, 10).items()
    }


def test_sharded_job_equals_one_piece_builds_and_verifies(sample, tmp_path, capsys):
    config = write_config(tmp_path, sample, "bm25 embeddings splade multivector")
    assert main(["index", "build", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "embeddings   built" in table and "tokens       built" in table  # tokens: required by multivector
    dataset = open_dataset_dir(sample)
    queries = dataset.queries()
    for kind, params in (("bm25", {}), ("embeddings", {}), ("splade", {}), ("multivector", {})):
        one_piece, _, _ = build_index(dataset, kind, params, index_root=tmp_path / "one-piece")
        sharded = tmp_path / "out" / one_piece.relative_to(tmp_path / "one-piece")
        manifest = Manifest.read(sharded)
        assert manifest.doc_count == 14 and len(manifest.build.get("shards", [])) in (0, 4)
        assert hits(sharded, queries) == hits(one_piece, queries), kind
        assert verify_index(sharded) == []
    # Embeddings are byte-identical to the one-piece build's.
    embeddings = next((tmp_path / "out" / "sample").glob("embeddings-*"))
    reference = next((tmp_path / "one-piece" / "sample").glob("embeddings-*"))
    assert Manifest.read(embeddings).files == Manifest.read(reference).files
    assert main(["index", "verify", str(tmp_path / "out")]) == 0


def test_a_rerun_reencodes_only_what_is_missing(sample, tmp_path):
    config = load_build_config(write_config(tmp_path, sample, "embeddings"))
    dataset = open_dataset_dir(sample)
    BuildJob(config, dataset).run()
    final = next((tmp_path / "out" / "sample").glob("embeddings-*"))
    before = Manifest.read(final).files
    shards = sorted((tmp_path / "out" / ".jobs").glob("*/shards/embeddings-*/*"))
    assert len(shards) == 4
    # As a SIGKILL leaves it: one shard never finished (its scratch folder of a dead process), the final index
    # not yet assembled.
    import shutil

    shutil.rmtree(shards[2])
    (shards[2].parent / ".00002.tmp-999999").mkdir()
    shutil.rmtree(final)
    report = BuildJob(config, dataset).run()[0]
    assert (report.shards, report.shards_reused, report.documents) == (4, 3, 4)
    assert Manifest.read(final).files == before
    assert not (shards[2].parent / ".00002.tmp-999999").exists()
    assert BuildJob(config, dataset).run()[0].status == "up to date"


def test_sigkill_mid_job_then_resume_gives_the_uninterrupted_index(sample, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    assert main(["index", "build", "--config", str(write_config(reference, sample, "embeddings", 1))]) == 0
    killed = tmp_path / "killed"
    killed.mkdir()
    config = write_config(killed, sample, "embeddings", 1)
    command = [sys.executable, "-m", "braid", "index", "build", "--config", str(config)]
    process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    until = time.monotonic() + 120
    # Committed shards only: a shard's scratch folder (".<name>.tmp-<pid>", a sibling until it is renamed into
    # place) holds a shard.json too before the rename, and pathlib's "*" matches dot-names; counting it made the
    # kill land with one shard committed, not two.
    while len([p for p in killed.glob("out/.jobs/*/shards/*/*/shard.json") if not p.parent.name.startswith(".")]) < 2:
        assert process.poll() is None and time.monotonic() < until
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not list(killed.glob("out/sample/embeddings-*/manifest.json"))  # no complete-looking index
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(next(killed.glob("out/.jobs/*/report.json")).read_text())[0]
    assert report["shards_reused"] >= 2
    final = next(killed.glob("out/sample/embeddings-*"))
    assert Manifest.read(final).files == Manifest.read(next(reference.glob("out/sample/embeddings-*"))).files


@pytest.mark.slow
def test_local_ray_with_two_workers_gives_the_in_process_indexes(sample, tmp_path):
    in_process = tmp_path / "in-process"
    in_process.mkdir()
    assert main(["index", "build", "--config", str(write_config(in_process, sample, "bm25 embeddings"))]) == 0
    on_ray = tmp_path / "ray"
    on_ray.mkdir()
    config = write_config(on_ray, sample, "bm25 embeddings")
    # In its own process, as users run it: Ray's signal handlers in the test process would break the JVM that
    # other tests start there (the JVM relies on its own SIGSEGV handling).
    command = [sys.executable, "-m", "braid", "index", "build", "--config", str(config), "--ray", "local"]
    result = subprocess.run([*command, "--ray-workers", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    queries = open_dataset_dir(sample).queries()
    for kind in ("bm25", "embeddings"):
        a = next(in_process.glob(f"out/sample/{kind}-*"))
        b = next(on_ray.glob(f"out/sample/{kind}-*"))
        assert hits(a, queries) == hits(b, queries)
    assert (
        Manifest.read(next(on_ray.glob("out/sample/embeddings-*"))).files
        == Manifest.read(next(in_process.glob("out/sample/embeddings-*"))).files
    )


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ('[collection]\ndataset = "x"\n[[index]]\nkind = "colbert"', "unknown kind 'colbert' (allowed: binary, bm25"),
        ('[collection]\ndataset = "x"\nshard_size = 0\n[[index]]\nkind = "bm25"', "shard_size must be an integer >= 1"),
        ('[collection]\ndataset = "x"\n[[index]]\nkind = "bm25"\nk1 = 3', "unknown bm25 index parameter(s) ['k1']"),
        ('colour = 1\n[collection]\ndataset = "x"', "unknown key(s) ['colour']"),
        ('[collection]\ndataset = "x"', "at least one [[index]]"),
        ("[collection\n", "invalid TOML"),
    ],
)
def test_bad_configs_are_refused_with_a_message(tmp_path, capsys, config_text, message):
    path = tmp_path / "build.toml"
    path.write_text(config_text)
    assert main(["index", "build", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_bad_collections_and_outputs_overwrite_nothing(sample, tmp_path, capsys):
    missing = write_config(tmp_path, tmp_path / "no-such-collection", "bm25")
    assert main(["index", "build", "--config", str(missing)]) == 2
    assert "no-such-collection" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "corpus.jsonl").write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n')
    (broken / "queries.jsonl").write_text('{"_id": "q", "text": "fine"}\n')
    assert main(["index", "build", "--config", str(write_config(tmp_path, broken, "bm25"))]) == 2
    assert "corpus.jsonl:2" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("broken/bm25-*"))
    # An output holding something else: refused, untouched.
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert main(["index", "build", "--config", str(write_config(tmp_path, sample, "bm25", output="stranger"))]) == 2
    assert "holds no braid indexes" in capsys.readouterr().err and (stranger / "notes.txt").read_text() == "mine"
    # A final index path holding a different index (edited by hand): refused without --force, bytes unchanged.
    config = write_config(tmp_path, sample, "bm25", output="ok")
    assert main(["index", "build", "--config", str(config)]) == 0
    final = next((tmp_path / "ok" / "sample").glob("bm25-*"))
    raw = json.loads((final / "manifest.json").read_text())
    raw["corpus_checksum"] = "edited:by-hand"
    (final / "manifest.json").write_text(json.dumps(raw))
    snapshot = {p: p.read_bytes() for p in final.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["index", "build", "--config", str(config)]) == 2
    assert "holds a different index" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in final.rglob("*") if p.is_file()} == snapshot


def test_verify_says_what_is_wrong(sample, tmp_path, capsys):
    config = write_config(tmp_path, sample, "embeddings")
    assert main(["index", "build", "--config", str(config)]) == 0
    final = next((tmp_path / "out" / "sample").glob("embeddings-*"))
    lines = (final / "doc_ids.txt").read_text().splitlines()
    (final / "doc_ids.txt").write_text("\n".join(lines[:-1]) + "\n")
    (final / "stray.bin").write_bytes(b"x")
    capsys.readouterr()
    assert main(["index", "verify", str(final)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "doc_ids.txt: 13 document ids, the manifest says 14" in out
    assert "file stray.bin is not in the manifest" in out
    assert main(["index", "verify", str(tmp_path / "nothing-here")]) == 2
