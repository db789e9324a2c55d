"""The ``braid`` command end to end, on real Lucene indexes over small collections."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from braid.service.cli.main import main
from tests.conftest import TINY_DOCS

REPO = Path(__file__).resolve().parents[2]


def braid(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "braid", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def braid_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Independent commands side by side: each is mostly Python start-up, so the cores run them at once."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(lambda args: braid(*args), commands))


def test_build_search_eval(tiny_beir, tmp_path, capsys):
    index_dir = str(tmp_path / "indexes")
    assert main(["index", "build", "--dataset", str(tiny_beir), "--index-dir", index_dir]) == 0
    assert "bm25 index built" in capsys.readouterr().out
    assert main(["search", "--dataset", str(tiny_beir), "--index-dir", index_dir, "--json", "-k", "2", "cat fish"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [hit["doc_id"] for hit in hits] == ["d2", "d3"]
    out_dir = tmp_path / "results"
    code = main(
        [
            "eval",
            "--dataset",
            str(tiny_beir),
            "--pipeline",
            "bm25",
            "--index-dir",
            index_dir,
            "--output",
            str(out_dir),
            "--json",
            "--latency-sample",
            "3",
        ]
    )
    assert code == 0
    row = json.loads(capsys.readouterr().out)
    assert row["queries"] == 4 and row["pipeline"] == "bm25"
    assert {"ndcg@10", "recall@100", "mrr@10", "map", "queries_per_s", "latency_ms_p50", "index_bytes"} <= set(row)
    # Query "d4" is also a document id: its self hit is dropped, so the relevant d1 is at rank 1.
    saved = json.loads((out_dir / "tiny" / "bm25.test.json").read_text())
    assert saved["per_query"]["mrr@10"]["d4"] == 1.0
    run_lines = (out_dir / "tiny" / "bm25.test.trec").read_text().splitlines()
    assert not any(line.split()[0] == line.split()[2] for line in run_lines)
    # Scoring the saved run file reproduces the pipeline's metrics.
    assert (
        main(
            [
                "eval",
                "--dataset",
                str(tiny_beir),
                "--run",
                str(out_dir / "tiny" / "bm25.test.trec"),
                "--output",
                str(tmp_path / "r2"),
                "--json",
            ]
        )
        == 0
    )
    rescored = json.loads(capsys.readouterr().out)
    assert rescored["ndcg@10"] == pytest.approx(row["ndcg@10"])


def test_search_an_index_folder_directly(tiny_beir, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", "--dataset", str(tiny_beir), "--output", str(out)]) == 0
    assert main(["search", "--index", str(out), "--param", "k1=1.2", "--param", "b=0.75", "dog"]) == 0
    text = capsys.readouterr().out
    assert "d4" in text.splitlines()[-3] and "dog dog" in text
    assert main(["index", "info", str(out)]) == 0
    assert "documents      4" in capsys.readouterr().out


def _assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_missing_dataset(tmp_path):
    missing, unknown = braid_all(
        ("eval", "--dataset", str(tmp_path / "nope"), "--pipeline", "bm25"),
        ("eval", "--dataset", "no-such-set", "--data-dir", str(tmp_path), "--pipeline", "bm25"),
    )
    _assert_clean_error(missing, "does not exist")
    _assert_clean_error(unknown, "unknown dataset 'no-such-set'")


def test_missing_index(tmp_path, tiny_beir):
    (tmp_path / "half").mkdir()
    results = braid_all(
        ("search", "--index", str(tmp_path / "none"), "cat"),
        ("search", "--index", str(tmp_path / "half"), "cat"),
        ("eval", "--dataset", str(tiny_beir), "--pipeline", "bm25", "--index-dir", str(tmp_path), "--no-build"),
    )
    for result, fragment in zip(
        results, ["does not exist", "not a complete braid index", "no bm25 index for tiny"], strict=True
    ):
        _assert_clean_error(result, fragment)


def test_malformed_jsonl_names_file_and_line(tiny_beir):
    with (tiny_beir / "corpus.jsonl").open("a") as handle:
        handle.write("{not json}\n")
    result = braid("index", "build", "--dataset", str(tiny_beir), "--output", str(tiny_beir.parent / "idx"))
    _assert_clean_error(result, f"{tiny_beir / 'corpus.jsonl'}:5: invalid JSON")
    assert not (tiny_beir.parent / "idx").exists()


def test_qrels_with_unknown_ids_are_counted(tiny_beir, tmp_path):
    with (tiny_beir / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q1\tghost1\t1\nq1\tghost2\t1\nq9\td1\t1\n")
    args = ["eval", "--dataset", str(tiny_beir), "--pipeline", "bm25", "--index-dir", str(tmp_path / "i")]
    _assert_clean_error(braid(*args), "2 unknown document id(s), e.g. ghost1, ghost2", "1 unknown query id(s), e.g. q9")
    allowed = braid(*args, "--allow-unknown-qrels", "--output", str(tmp_path / "r"), "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: qrels/test of tiny: 2 unknown document id(s)" in allowed.stderr
    assert json.loads(allowed.stdout)["queries"] == 4


def test_empty_query_and_bad_arguments(tiny_beir, tmp_path):
    dataset = str(tiny_beir)
    expected = {
        ("search", "--dataset", dataset, "  "): "empty query",
        ("index", "build", "--dataset", dataset, "--kind", "hnsw"): "invalid choice",
        ("eval", "--dataset", dataset): "give --pipeline",
        ("serve", "--dataset", dataset, "--ray", "local"): "give --shards N >= 2",
        ("serve", "--dataset", dataset, "--replicas", "2"): "--replicas needs --ray",
        ("eval", "--dataset", dataset, "--shards", "0"): "expected a positive integer",
        ("eval", "--dataset", dataset, "--run", str(tmp_path / "x.trec")): "does not exist",
        ("index", "build", "--dataset", dataset, "--param", "stemmer=snowball", "--output", str(tmp_path / "o")): (
            "stemmer must be one of porter, krovetz, none"
        ),
    }
    for result, fragment in zip(braid_all(*expected), expected.values(), strict=True):
        _assert_clean_error(result, fragment)


@pytest.mark.parametrize("kind", ["splade", "slim"])
def test_learned_sparse_kinds_build_search_and_eval(tiny_beir, tmp_path, capsys, kind):
    index_dir = str(tmp_path / "indexes")
    assert main(["index", "build", "--dataset", str(tiny_beir), "--kind", kind, "--index-dir", index_dir]) == 0
    assert f"{kind} index built" in capsys.readouterr().out
    assert main(["search", "--dataset", str(tiny_beir), "--pipeline", kind, "--index-dir", index_dir, "fish"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The snippet comes from the corpus, since impact indexes keep no text.
    top = lines[0].split()[2]
    title, text = TINY_DOCS[top]
    assert top in {"d2", "d3"} and lines[0].endswith(f"{title} {text}".strip())
    assert (
        main(
            [
                *("eval", "--dataset", str(tiny_beir), "--pipeline", kind, "--index-dir", index_dir),
                *("--output", str(tmp_path / "r"), "--json", "--latency-sample", "2"),
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)
    assert row["pipeline"] == kind and row["build_docs_per_s"] > 0 and 0 < row["ndcg@10"] <= 1


def test_unavailable_model_is_a_clear_error(tiny_beir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "braid", "index", "build", "--dataset", str(tiny_beir)),
            *("--kind", "splade", "--param", "model=braid-test/no-such-model", "--output", str(tmp_path / "o")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    _assert_clean_error(result, "model 'braid-test/no-such-model' is neither embedded", "may be offline")
    assert not (tmp_path / "o").exists()


def test_checkpoint_without_masked_lm_head_is_refused(tiny_beir, tmp_path):
    from braid.common.model_source import embedded_model_path

    encoder_only = embedded_model_path("all-MiniLM-L6-v2")  # a BertModel: no vocabulary head
    for kind in ("splade", "slim"):
        result = braid(
            *("index", "build", "--dataset", str(tiny_beir), "--kind", kind),
            *("--param", f'model="{encoder_only}"', "--output", str(tmp_path / kind)),
        )
        _assert_clean_error(result, "is not a masked language model (architectures: BertModel)")
        assert not (tmp_path / kind).exists()


@pytest.mark.parametrize("kind", ["bm25", "splade", "slim"])
def test_empty_documents_and_odd_queries(tmp_path, capsys, kind):
    from tests.conftest import write_beir

    docs = {"e": ("", ""), "a": ("", "solar panels convert sunlight"), "b": ("", "wind turbines")}
    root = write_beir(tmp_path / "odd", docs=docs, queries={"q": "solar"}, qrels=[("q", "a", 1)])
    index_dir = str(tmp_path / "indexes")
    assert main(["index", "build", "--dataset", str(root), "--kind", kind, "--index-dir", index_dir]) == 0
    capsys.readouterr()
    # Stop words only, characters the vocabulary lacks, and a zero-width character: results or none, no crash.
    for query in ("the of and", "☃ ☃", "\u200b"):
        code = main(["search", "--dataset", str(root), "--pipeline", kind, "--index-dir", index_dir, "--json", query])
        assert code == 0
        hits = json.loads(capsys.readouterr().out)
        assert all(hit["doc_id"] in docs for hit in hits)
    assert (
        main(["search", "--dataset", str(root), "--pipeline", kind, "--index-dir", index_dir, "--json", "solar"]) == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["doc_id"] == "a"


def test_slim_over_only_empty_documents_returns_nothing(tmp_path, capsys):
    from tests.conftest import write_beir

    root = write_beir(
        tmp_path / "blank", docs={"x": ("", ""), "y": ("", " ")}, queries={"q": "a"}, qrels=[("q", "x", 1)]
    )
    args = ["--dataset", str(root), "--pipeline", "slim", "--index-dir", str(tmp_path / "i")]
    assert main(["search", *args, "--json", "anything at all"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_multivector_build_search_eval_add_delete(tiny_beir, tmp_path, capsys):
    index_dir = str(tmp_path / "indexes")
    common = ["--dataset", str(tiny_beir), "--index-dir", index_dir]
    assert main(["index", "build", *common, "--kind", "multivector", "--pool-factor", "2"]) == 0
    built = capsys.readouterr().out
    assert "multivector index built" in built
    path = built.split(": ")[1].split(" (")[0]
    assert main(["search", "--index", path, "--json", "-k", "2", "--param", "mode=xtr", "cat fish"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["doc_id"] == "d2"
    assert main(["search", "--index", path, "-k", "2", "cat fish"]) == 0  # no stored text: ids and scores only
    assert "d2" in capsys.readouterr().out
    assert main(["index", "build", *common, "--kind", "multivector", "--pool-factor", "5"]) == 2
    assert "pool_factor must be one of 1, 2, 3, 4, got 5" in capsys.readouterr().err
    assert main(["index", "build", *common, "--kind", "bm25", "--pool-factor", "2"]) == 2
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "d9", "title": "", "text": "parrot cat"}) + "\n")
    assert main(["index", "add", path, "--corpus", str(extra)]) == 0
    assert "now holds 5" in capsys.readouterr().out
    assert main(["index", "add", path, "--corpus", str(extra)]) == 2
    assert "already in the index" in capsys.readouterr().err
    assert main(["index", "delete", path, "d9", "ghost"]) == 2
    assert "unknown document id(s), e.g. ['ghost']" in capsys.readouterr().err
    assert main(["index", "delete", path, "d9"]) == 0
    assert main(["index", "delete", index_dir, "d1"]) == 2
    out = str(tmp_path / "results")
    assert main(["eval", *common, "--pipeline", "multivector", "--output", out, "--latency-sample", "2"]) == 0


def test_library_chatter_stays_off_the_console_unless_verbose(tiny_beir, tmp_path):
    """A SPLADE build loads two models through Hugging Face and runs Lucene: braid's bar and summary line show,
    the libraries' model-loading bars and INFO logs do not; --verbose (after the command too) lets them through."""
    build = ("index", "build", "--dataset", str(tiny_beir), "--kind", "splade", "--index-dir")
    # As from a shell: without the switches an in-process main() of an earlier test left in this process's environment.
    switches = ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", "TRANSFORMERS_NO_ADVISORY_WARNINGS")
    env = {name: value for name, value in os.environ.items() if name not in switches}

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "braid", *args]
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        quiet, verbose = pool.map(
            lambda args: run(*args), [(*build, str(tmp_path / "a")), (*build, str(tmp_path / "b"), "--verbose")]
        )
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert "encode splade" in quiet.stderr and "built splade index" in quiet.stderr
    for noise in ("Loading weights", " INFO ", "INFO:", "Warning", "warn("):
        assert noise not in quiet.stderr, noise
    assert "Loading weights" in verbose.stderr
