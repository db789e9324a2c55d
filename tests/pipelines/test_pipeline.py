from __future__ import annotations

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.pipeline import builtin_pipelines, load_pipeline, open_pipeline


def test_builtin_bm25_uses_beir_settings():
    assert {"bm25", "bm25-lucene", "splade", "slim", "dense"} <= set(builtin_pipelines())
    spec = load_pipeline("bm25")
    assert spec.name == "bm25"
    (retriever,) = spec.retrievers
    assert retriever.kind == "bm25" and retriever.depth == 1000
    assert retriever.search_params() == {"k1": 0.9, "b": 0.4}
    assert retriever.index_params() == {"stemmer": "porter", "keep_stopwords": False}


TWO = 'name = "x"\n[[retrievers]]\nname = "a"\nkind = "bm25"\n[[retrievers]]\nname = "b"\nkind = "bm25"\n'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            'name = "x"\n[[retrievers]]\nkind = "colbert"\n',
            r"unknown retriever kind 'colbert' \(allowed: bm25, splade, slim, dense, binary, multivector\)",
        ),
        ('[[retrievers]]\nkind = "bm25"\n', "missing field 'name'"),
        ('name = "x"\n', "missing field 'retrievers'"),
        ('name = "x"\n[[retrievers]]\nk1 = 1.0\n', "missing field 'kind'"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\nk1 = "high"\n', "k1 must be float, got str 'high'"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\nk3 = 1\n', r"unknown field\(s\) \['k3'\] for bm25"),
        ('name = "x"\nfusion = "rrf"\n[[retrievers]]\nkind = "bm25"\n', r"\[fusion\]: must be a table"),
        ('name = "x"\nstages = 1\n[[retrievers]]\nkind = "bm25"\n', r"unknown field\(s\) \['stages'\]"),
        (TWO + "", r"2 retrievers need a \[fusion\] table \(method: rrf, weighted\)"),
        (TWO + '[fusion]\nmethod = "borda"\n', "method must be one of rrf, weighted"),
        (TWO + '[fusion]\nmethod = "weighted"\nnormalization = "l2"\n', "normalization must be one of minmax"),
        (TWO + "[fusion]\nweights = { a = 1.0, c = 2.0 }\n", r"unknown: \['c'\]; missing: \['b'\]"),
        (TWO + '[fusion]\nweights = { a = 1.0, b = "x" }\n', "weights.b must be float"),
        (TWO + "[fusion]\nweights = { a = 1.0, b = -1 }\n", "weight of 'b' must be a finite number >= 0"),
        (TWO + "[fusion]\nweights = { a = 0, b = 0.0 }\n", "fusion weights sum to 0; give at least one of a, b"),
        (
            'name = "x"\n[[retrievers]]\nkind = "bm25"\n[[retrievers]]\nkind = "bm25"\n[fusion]\n',
            r"retriever names must be unique; repeated: \['bm25'\]",
        ),
        (
            'name = "x"\n[[retrievers]]\nkind = "bm25"\n[[cascade]]\nkind = "bm25"\n',
            r"unknown cascade scorer kind 'bm25' \(allowed: slim, dense, multivector\)",
        ),
        (
            'name = "x"\n[[retrievers]]\nkind = "bm25"\n[rerank]\nmode = "listwise"\n',
            r"\[rerank\]: mode must be one of first, attention, learned, generate, got 'listwise'",
        ),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\n[rerank]\ntemperature = 1\n', r"\[rerank\]: unknown field"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\n[rerank]\nwindow = 10\nstride = 10\n', "stride .10. must be"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\n[rerank]\nlayers = [1.5]\n', "layers must be a list of int"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\ndepth = 0\n', "depth must be >= 1"),
        (
            TWO + "[fusion]\n[per_dataset.tiny.fusion]\nweights = { a = 1.0, c = 2.0 }\n",
            r"per_dataset.tiny.fusion weights must name each retriever once .*unknown: \['c'\]; missing: \['b'\]",
        ),
        (TWO + '[fusion]\n[per_dataset.tiny.fusion]\nmethod = "borda"\n', r"\[per_dataset.tiny\] fusion: method must"),
        (TWO + "[fusion]\n[per_dataset.tiny]\ntuned = { split = 'dev' }\n", "missing field 'fusion'"),
        (TWO + "[fusion]\n[per_dataset.tiny]\nfusion = {}\nk = 1\n", r"unknown field\(s\) \['k'\] \(allowed: fusion"),
        ("per_dataset = 3\n" + TWO + "[fusion]\n", "per_dataset must be a table"),
        (
            'name = "x"\n[[retrievers]]\nkind = "bm25"\n[per_dataset.tiny.fusion]\nmethod = "rrf"\n',
            "per_dataset fusion needs two or more retrievers",
        ),
        ("name = \n", "invalid TOML"),
        ('name = "x"\n[[retrievers]]\nkind = "bm25"\nscores_top = 5\n', "scores_top needs a kind that scores"),
        ('name = "x"\n[[retrievers]]\nkind = "dense"\nscores_top = -1\n', "scores_top must be >= 0"),
        ('name = "x"\n[[retrievers]]\nkind = "dense"\nscores_top = 5\n', "at least one retriever must search"),
    ],
)
def test_invalid_pipeline_files_are_explained(tmp_path, body, message):
    path = tmp_path / "p.toml"
    path.write_text(body)
    with pytest.raises(BraidError, match=message):
        load_pipeline(str(path))


def test_unknown_pipeline_name_lists_builtins():
    with pytest.raises(BraidError, match=r"built-ins: .*\bbm25, bm25-attention, bm25-first, bm25-lucene\b"):
        load_pipeline("hybrid-nope")


def test_pipeline_file_parameters_reach_the_search(tiny_beir, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "tuned"\n[[retrievers]]\nkind = "bm25"\nk1 = 1\nb = 0.75\ndepth = 2\n')
    dataset = open_dataset_dir(tiny_beir)
    pipeline = open_pipeline(load_pipeline(str(path)), dataset, tmp_path / "indexes")
    assert pipeline.depth == 2
    assert len(pipeline.batch_search({"q": "dog"})["q"]) == 2
    with pytest.raises(BraidError, match="empty query"):
        pipeline.search("   ")
    with pytest.raises(BraidError, match="no bm25 index"):
        open_pipeline(load_pipeline("bm25-lucene"), dataset, tmp_path / "elsewhere", build_missing=False)


RESCORED = """name = "rescored"
[[retrievers]]
kind = "bm25"
[[retrievers]]
kind = "dense"
scores_top = 2
[fusion]
method = "weighted"
normalization = "zscore"
"""


def test_a_rescoring_retriever_scores_exactly_the_other_retrievers_candidates(tiny_beir, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(RESCORED)
    dataset = open_dataset_dir(tiny_beir)
    pipeline = open_pipeline(load_pipeline(str(path)), dataset, tmp_path / "indexes")
    query = "cat fish dog"
    hits, timings = pipeline.search_explained(query, k=4)
    bm25, dense = (stage.retriever for stage in pipeline.stages)
    candidates = [hit.doc_id for hit in bm25.search(query, 2)]
    assert len(bm25.search(query, 4)) == 4  # all four match: the dense list holds only BM25's top 2
    scored = {hit.doc_id: hit.sources["dense"].score for hit in hits if hit.sources["dense"].rank is not None}
    assert sorted(scored) == sorted(candidates)
    exact = dict(zip(candidates, dense.score(query, candidates).tolist(), strict=True))
    assert scored == pytest.approx(exact, abs=1e-6)
    assert "retriever.dense" in timings
    # The batch path (eval, tuning) fuses the same lists.
    batch = pipeline.batch_search({"q": query}, 4)["q"]
    assert [hit.doc_id for hit in batch] == [hit.doc_id for hit in hits]
    assert [hit.score for hit in batch] == pytest.approx([hit.score for hit in hits])


FED = """name = "fed"
[[retrievers]]
name = "a"
kind = "bm25"
[[retrievers]]
name = "b"
kind = "bm25"
k1 = 3.0
b = 1.0
[[retrievers]]
kind = "dense"
scores_top = 2
candidates_from = ["a"]
[fusion]
method = "weighted"
normalization = "zscore"
weights = { a = 0.5, b = WEIGHT_B, dense = 0.5 }
"""


@pytest.mark.parametrize("weight_b", [0.0, 0.3])
def test_candidates_from_names_whose_top_a_rescoring_retriever_scores(tiny_beir, tmp_path, weight_b):
    path = tmp_path / "p.toml"
    path.write_text(FED.replace("WEIGHT_B", str(weight_b)))
    spec = load_pipeline(str(path))
    assert spec.retrievers[2].candidates_from == ("a",)
    pipeline = open_pipeline(spec, open_dataset_dir(tiny_beir), tmp_path / "indexes")
    a, b, _ = (stage.retriever for stage in pipeline.stages)
    query = "cat fish dog"
    assert {h.doc_id for h in a.search(query, 2)} != {h.doc_id for h in b.search(query, 2)}  # b's top would differ
    hits, timings = pipeline.search_explained(query, k=4)
    scored = {hit.doc_id for hit in hits if hit.sources["dense"].rank is not None}
    assert scored == {h.doc_id for h in a.search(query, 2)}
    # b feeds nothing: at weight 0 it does not run; weighted, it runs and counts but dense still scores a's top.
    assert ("retriever.b" in timings) == (weight_b > 0)
    lists = pipeline.first_stage_lists({"q": query}, 4)  # tuning reads every list, dense over a's top alike
    assert {h.doc_id for h in lists[2]["q"]} == scored


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("scores_top = 2\n", ""), "candidates_from names whose top scores_top scores"),
        (('["a"]', '["c"]'), r"candidates_from must name searching retrievers once each \(allowed: a, b; got c\)"),
        (('["a"]', '["a", "a"]'), "once each"),
        (('["a"]', '"a"'), "candidates_from must be a list of retriever names"),
    ],
)
def test_bad_candidates_from_is_refused_with_what_is_allowed(tmp_path, edit, message):
    path = tmp_path / "p.toml"
    path.write_text(FED.replace("WEIGHT_B", "0.0").replace(*edit))
    with pytest.raises(BraidError, match=message):
        load_pipeline(str(path))
