"""The learned score head: features of one walk equal separate forwards, the listwise fit learns, heads round-trip
through their file, ``mode = "learned"`` scores with them, the pipeline fuses them with the first stage, and
``braid train ranker --head`` fits, resumes and refuses bad requests."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.pipeline import fuse_with_first_stage, load_pipeline, open_pipeline
from braid.ranker.attention_features import CALIBRATION_QUERY, FeatureLayout, window_features
from braid.ranker.llm_source import load_llm
from braid.ranker.query_likelihood import REQUEST, likelihood_prompts, query_log_likelihood
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker
from braid.ranker.score_head import ScoreHead, TrainingWindow, builtin_heads, fit_head, listwise_loss, resolve_head
from braid.service.cli.main import main
from tests.conftest import write_beir

TEXTS = ["the dog barks loudly", "heat melts ice quickly", "fish swim in water"]
DOCS = {f"d{i}": ("", text) for i, text in enumerate([
    "dog barks loudly", "cat sleeps all day", "fish swim in water", "heat melts ice", "dog chases cat",
    "ice is cold water", "birds fly south", "fish eat small bugs"])}  # fmt: skip
QUERIES = {"q1": "dog cat", "q2": "fish water", "q3": "ice heat water", "q4": "dog barks", "q5": "fish bugs",
           "q6": "cat sleeps"}  # fmt: skip
QRELS = [("q1", "d4", 1), ("q2", "d2", 1), ("q3", "d3", 1), ("q4", "d0", 1), ("q5", "d7", 1), ("q6", "d1", 1)]


@pytest.fixture(scope="module")
def tiny_ranker(tiny_lm_dir) -> BlockRanker:
    lm = load_llm(str(tiny_lm_dir), "float32", "cpu")
    return BlockRanker(RerankSpec(model=str(tiny_lm_dir), mode="attention", window=3, stride=2, max_doc_tokens=16), lm)


def random_head(layout: FeatureLayout, path: Path, fusion_weight: float = 1.0) -> ScoreHead:
    generator = torch.Generator().manual_seed(0)
    size = layout.size
    head = ScoreHead(layout, torch.randn(size, generator=generator), torch.rand(size, generator=generator) + 0.5,
                     torch.randn(size, generator=generator), fusion_weight, "tiny", 16)  # fmt: skip
    head.save(path)
    return head


def test_features_of_one_walk_equal_separate_forwards(tiny_ranker):
    layout = FeatureLayout((0, 1), heads=2, probe=2, first=True)
    prompt = tiny_ranker.prompt(TEXTS, "which animal barks")
    together = tiny_ranker.window_features([("which animal barks", TEXTS)], layout)[0]
    assert together.shape == (3, layout.size) == (3, len(layout.names()))
    with torch.inference_mode():
        alone = tiny_ranker.forward(prompt, (0, 1), 2, need_logits=True)
        twin = tiny_ranker.forward(tiny_ranker.prompt(TEXTS, CALIBRATION_QUERY), (0, 1), 2, need_logits=True)
    labels = list(prompt.label_token_ids)
    expected = window_features(layout, alone.doc_attention, prompt.doc_lengths, twin.doc_attention,
                               alone.last_logits[labels], twin.last_logits[labels])  # fmt: skip
    assert torch.allclose(together, expected, atol=1e-5)
    # The calibrated block is the attention block minus the content-free query's.
    per_layer = len(layout.layers) * layout.heads
    attention, calibrated = together[:, :per_layer], together[:, per_layer : 2 * per_layer]
    assert not torch.allclose(attention, calibrated)
    assert torch.isfinite(together).all()
    assert torch.allclose(together[:, -1], torch.log(torch.tensor(prompt.doc_lengths, dtype=torch.float32)))


def test_query_likelihood_equals_the_dense_forward(tiny_ranker):
    query = "which animal barks"
    prompts, n_query = likelihood_prompts(tiny_ranker.lm.tokenizer, tiny_ranker.template, query, TEXTS, 16, 8)
    assert len(prompts) == 3 and all(len(p.documents) == 1 for p in prompts)
    with torch.inference_mode():
        got = query_log_likelihood(tiny_ranker.forward, tiny_ranker.lm.model.lm_head, prompts, n_query)
        for prompt, value in zip(prompts, got, strict=True):
            ids = prompt.flat_ids()  # one document: the block layout is the ordinary causal prompt
            logprobs = torch.log_softmax(tiny_ranker.lm.model(input_ids=ids[None]).logits[0].float(), dim=-1)
            targets = ids[-n_query:]
            expected = logprobs[-n_query - 1 : -1].gather(1, targets[:, None]).mean()
            assert value.item() == pytest.approx(expected.item(), abs=1e-4)
    assert tiny_ranker.query_likelihood(query, TEXTS).tolist() == pytest.approx(got.tolist(), abs=1e-5)
    with pytest.raises(BraidError, match="empty query"):
        likelihood_prompts(tiny_ranker.lm.tokenizer, tiny_ranker.template, "  ", TEXTS, 16, 8)


def test_likelihood_prompts_encode_the_window_as_one_text_at_a_time_would(tiny_ranker):
    tokenizer, template = tiny_ranker.lm.tokenizer, tiny_ranker.template
    texts = ["the dog   barks\nloudly", " \t ", "heat " * 40, "fish"]
    prompts, _ = likelihood_prompts(tokenizer, template, "dogs", texts, 16, 8)
    encode = partial(tokenizer.encode, add_special_tokens=False)
    request = tuple(encode("\n" + REQUEST) + encode(template.tail)[:-1])
    bodies = ["the dog barks loudly", "(empty)", " ".join(["heat"] * 40), "fish"]  # whitespace folded, as before
    assert [p.documents for p in prompts] == [(tuple(encode(f"Passage: {b}")[:16]) + request,) for b in bodies]
    assert likelihood_prompts(tokenizer, template, "dogs", [], 16, 8)[0] == []


def test_listwise_fit_learns_which_feature_carries_relevance():
    generator = torch.Generator().manual_seed(1)
    layout = FeatureLayout((0,), heads=3, attention=True, calibrated=False, length=False)
    windows = []
    for _ in range(40):
        grades = torch.zeros(6)
        grades[torch.randint(0, 6, (1,), generator=generator)] = 1.0
        noise = torch.randn(6, 3, generator=generator)
        noise[:, 1] += 3.0 * grades  # only the middle feature knows the relevant document
        windows.append(TrainingWindow(noise, grades))
    mean, std, weight = fit_head(windows, layout, l2=1e-3)
    assert weight.abs().argmax().item() == 1 and weight[1] > 0
    hits = sum(int((((w.features - mean) / std) @ weight).argmax() == w.grades.argmax()) for w in windows)
    assert hits >= 36
    # The loss is the ListNet top-one cross-entropy: padding slots do not count.
    scores = torch.tensor([[2.0, 0.0, 5.0]])
    mask = torch.tensor([[True, True, False]])
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    assert listwise_loss(scores, torch.tensor([[1.0, 0.0, 0.0]]), mask).item() == pytest.approx(expected.item())
    with pytest.raises(BraidError, match="no training window has a relevant document"):
        fit_head([TrainingWindow(torch.zeros(3, 3), torch.zeros(3))], layout, 0.1)


def test_heads_round_trip_and_bad_files_are_refused(tmp_path):
    layout = FeatureLayout((0, 1), heads=2, probe=2)
    head = random_head(layout, tmp_path / "head.json", fusion_weight=0.4)
    loaded = resolve_head(str(tmp_path), "ignored")  # a training output folder stands for its head.json
    assert loaded.layout == layout and loaded.fusion_weight == 0.4
    assert torch.equal(loaded.weight, head.weight) and loaded.to_dict()["features"] == layout.names()
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(BraidError, match="is not a braid score head"):
        resolve_head(str(tmp_path / "bad.json"), "x")
    broken = head.to_dict() | {"weight": [1.0]}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(BraidError, match="weight has shape"):
        resolve_head(str(tmp_path / "broken.json"), "x")
    with pytest.raises(BraidError, match="does not exist"):
        resolve_head(str(tmp_path / "missing.json"), "x")
    with pytest.raises(BraidError, match=r"has no built-in score head .*built-in heads: smollm2"):
        resolve_head("", "some-other-model")
    with pytest.raises(BraidError, match="unknown fields"):
        FeatureLayout.from_dict({"layers": [0], "heads": 1, "colour": "red"})


@pytest.mark.parametrize("name", ["smollm2", "smollm2-hybrid"])
def test_each_builtin_head_fits_smollm2_and_says_how_it_was_made(name):
    assert name in builtin_heads()
    head = resolve_head(name if name != "smollm2" else "", "smollm2")
    assert head.model == "smollm2" and head.max_doc_tokens == 128
    assert not head.layout.reads_window or (head.layout.heads == 9 and max(head.layout.layers) < 30)
    provenance = head.provenance
    assert provenance["command"].startswith("braid train ranker --head")
    assert not any(source.endswith("/test") and not source.startswith("trec-dl-2020") for source in provenance["data"])
    metrics = provenance["metrics"]["cv_ndcg@10"]
    assert metrics["head"] >= metrics["first_stage"]
    assert Path(resolve_head.__code__.co_filename).with_name("heads").joinpath(f"{name}.json").stat().st_size < 20 << 20


@pytest.mark.parametrize("pipeline", ["bm25-first", "hybrid-rerank"])
def test_builtin_rerank_pipelines_use_a_head_fitted_on_their_own_first_stage(pipeline):
    # A head's fusion weight is chosen against one first stage's scores; over another it can pull rankings down
    # (BM25's head at weight 0.6 took the hybrid from 0.7319 to 0.7098 on scifact test).
    spec = load_pipeline(pipeline)
    head = resolve_head(spec.rerank.head, spec.rerank.model)
    first_stage = load_pipeline(head.provenance["first_stage"])
    # Depth aside (it only has to cover the reranked head): the same retrievers, fused the same way.
    assert [replace(r, depth=0) for r in first_stage.retrievers] == [replace(r, depth=0) for r in spec.retrievers]
    assert first_stage.fusion == spec.fusion
    assert first_stage.per_dataset == spec.per_dataset


def test_learned_mode_scores_with_the_head(tiny_ranker, tiny_lm_dir, tmp_path):
    layout = FeatureLayout((1,), heads=2, probe=2)
    head = random_head(layout, tmp_path / "h.json")
    ranker = BlockRanker(
        RerankSpec(model=str(tiny_lm_dir), mode="learned", head=str(tmp_path / "h.json"), window=3, stride=2,
                   max_doc_tokens=16), tiny_ranker.lm)  # fmt: skip
    assert ranker.layers == (1,) and ranker.fusion_weight is None
    docs = [(f"d{i}", text) for i, text in enumerate(TEXTS)]
    ranked = ranker.rerank("which animal barks", docs)
    features = tiny_ranker.window_features([("which animal barks", TEXTS)], layout)[0]
    expected = head.score(features).tolist()
    assert dict(ranked) == pytest.approx({f"d{i}": value for i, value in enumerate(expected)}, abs=1e-5)
    assert [score for _, score in ranked] == sorted(expected, reverse=True)
    # Batched requests (the service's path) give the same scores.
    together = ranker.rerank_many([("which animal barks", docs), ("what melts ice", docs)])
    assert dict(together[0]) == pytest.approx(dict(ranked), abs=1e-5)


def test_a_pointwise_head_scores_long_lists_in_chunks_and_keeps_its_scores(tiny_ranker, tiny_lm_dir, tmp_path):
    layout = FeatureLayout((), heads=2, attention=False, calibrated=False, length=False, likelihood=True)
    head = ScoreHead(layout, torch.tensor([-3.0]), torch.tensor([2.0]), torch.tensor([1.5]), 1.0, "tiny", 16)
    head.save(tmp_path / "ql.json")
    ranker = BlockRanker(
        RerankSpec(model=str(tiny_lm_dir), mode="learned", head=str(tmp_path / "ql.json"), window=3, stride=2,
                   max_doc_tokens=16), tiny_ranker.lm)  # fmt: skip
    assert ranker.pointwise and not layout.reads_window
    texts = [*TEXTS, "birds fly south", "the cat sleeps"]
    docs = [(f"d{i}", text) for i, text in enumerate(texts)]
    ranked = ranker.rerank("which animal barks", docs)  # two chunks: 3 + 2 documents
    expected = (tiny_ranker.query_likelihood("which animal barks", texts) + 3.0) / 2.0 * 1.5
    assert dict(ranked) == pytest.approx({f"d{i}": value for i, value in enumerate(expected.tolist())}, abs=1e-4)
    assert [score for _, score in ranked] == sorted(expected.tolist(), reverse=True)


def test_a_layout_without_the_listwise_walk_still_reads_its_document_lengths(tiny_ranker):
    # No attention or FIRST: the listwise prompt is tokenized only for the lengths, and only when they are read.
    query = "which animal barks"
    layout = FeatureLayout((), heads=2, attention=False, calibrated=False, length=True, likelihood=True)
    (features,) = tiny_ranker.window_features([(query, TEXTS)], layout)
    lengths = torch.tensor(tiny_ranker.prompt(TEXTS, query).doc_lengths, dtype=torch.float32)
    assert torch.equal(features[:, 0], torch.log(lengths))
    assert torch.allclose(features[:, 1], tiny_ranker.query_likelihood(query, TEXTS), atol=1e-6)
    likelihood_only = FeatureLayout((), heads=2, attention=False, calibrated=False, length=False, likelihood=True)
    (alone,) = tiny_ranker.window_features([(query, TEXTS)], likelihood_only)
    assert torch.equal(alone, features[:, 1:])


def test_a_head_for_another_model_is_refused(tiny_ranker, tiny_lm_dir, tmp_path):
    random_head(FeatureLayout((0, 5), heads=2), tmp_path / "deep.json")
    with pytest.raises(BraidError, match="fitted for another model"):
        BlockRanker(RerankSpec(model=str(tiny_lm_dir), mode="learned", head=str(tmp_path / "deep.json"), window=3,
                               stride=2, max_doc_tokens=16), tiny_ranker.lm)  # fmt: skip


def test_fusion_weight_settings_are_validated():
    with pytest.raises(BraidError, match=r"fusion_weight must be in \[0, 1\]"):
        RerankSpec(fusion_weight=1.5)
    with pytest.raises(BraidError, match="head applies to mode = 'learned' only"):
        RerankSpec(mode="first", head="x.json")
    with pytest.raises(BraidError, match="mode 'generate' only permutes"):
        RerankSpec(mode="generate", fusion_weight=0.5)


def test_pipeline_fuses_the_head_with_the_first_stage(tiny_beir, tiny_lm_dir, tmp_path):
    random_head(FeatureLayout((1,), heads=2, probe=2), tmp_path / "h.json", fusion_weight=0.5)
    table = f'[rerank]\nmodel = "{tiny_lm_dir}"\nmode = "learned"\nhead = "{tmp_path / "h.json"}"\ndepth = 3\n'
    table += "window = 3\nstride = 2\nmax_doc_tokens = 16\n"
    base = '[[retrievers]]\nkind = "bm25"\n'
    (tmp_path / "fused.toml").write_text('name = "fused"\n' + base + table)
    (tmp_path / "alone.toml").write_text('name = "alone"\n' + base + table + "fusion_weight = 1.0\n")
    dataset = open_dataset_dir(tiny_beir)
    fused = open_pipeline(load_pipeline(str(tmp_path / "fused.toml")), dataset, tmp_path / "ix")
    alone = open_pipeline(load_pipeline(str(tmp_path / "alone.toml")), dataset, tmp_path / "ix")
    first = open_pipeline(load_pipeline("bm25"), dataset, tmp_path / "ix")
    assert fused.reranker.fusion_weight == 0.5 and alone.reranker.fusion_weight is None
    query = "cat fish dog"
    bm25 = first.search_explained(query, 3)[0]
    llm = dict(alone.reranker.rerank(query, [(hit.doc_id, fused.document_text(hit.doc_id)) for hit in bm25]))
    expected = fuse_with_first_stage([llm[hit.doc_id] for hit in bm25], [hit.score for hit in bm25], 0.5)
    hits = fused.search_explained(query, 3)[0]
    by_id = {hit.doc_id: value for hit, value in zip(bm25, expected, strict=True)}
    assert [hit.stages["rerank"] for hit in hits] == pytest.approx([by_id[hit.doc_id] for hit in hits])
    assert [hit.doc_id for hit in hits] == sorted(by_id, key=lambda doc: -by_id[doc])
    values = fuse_with_first_stage([1.0, 2.0, 3.0], [30.0, 20.0, 10.0], 0.25)
    assert values.tolist() == pytest.approx((0.25 * np.array([-1, 0, 1]) + 0.75 * np.array([1, 0, -1])) * 1.5**0.5)


def test_train_ranker_head_fits_resumes_and_refuses_bad_requests(tiny_lm_dir, tmp_path, capsys):
    collection = write_beir(tmp_path / "animals", DOCS, QUERIES, QRELS)
    base = ["train", "ranker", "--head", "--dataset", str(collection), "--split", "test", "--model", str(tiny_lm_dir),
            "--window", "3", "--max-doc-tokens", "16", "--head-layers", "2", "--probe-tokens", "2", "--folds", "2",
            "--head-features", "calibrated,likelihood", "--device", "cpu",
            "--index-dir", str(tmp_path / "ix")]  # fmt: skip
    output = tmp_path / "run"
    assert main([*base, "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "CV nDCG@10 of the windows" in printed and f'head = "{output / "head.json"}"' in printed
    head = ScoreHead.load(output / "head.json")
    assert head.layout.layers == (0, 1) and head.layout.heads == 2 and head.max_doc_tokens == 16
    assert head.layout.names()[-1] == "query_likelihood" and head.layout.size == 2 * 2 + 1
    provenance = head.provenance
    assert provenance["data"] == ["animals/test"] and provenance["seed"] == 0
    assert provenance["metrics"]["windows"] == {"animals/test": 6}  # each query's relevant doc is in its BM25 top 3
    cache = next((output / "windows").glob("*.pt"))
    stamp = cache.stat().st_mtime_ns
    assert main([*base, "--output", str(output)]) == 0  # resumed: every window is cached, nothing recomputed
    assert cache.stat().st_mtime_ns == stamp
    assert torch.equal(ScoreHead.load(output / "head.json").weight, head.weight)
    capsys.readouterr()
    assert main([*base, "--output", str(tmp_path / "deep"), "--head-layers", "5"]) == 2
    assert "out of range: the model has layers 0..1" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--output", str(tmp_path / "file")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "x"), "--negatives-pipeline", "bm25-first"]) == 2
    assert "reranks; give a first stage" in capsys.readouterr().err
    assert main([*base, "--output", str(tmp_path / "x"), "--head-features", "colour"]) == 2
    assert "allowed: attention, calibrated, first, length, likelihood" in capsys.readouterr().err
