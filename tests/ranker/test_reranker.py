"""The reranker end to end with the embedded SmolLM2: modes, long lists, bad input, and as a pipeline stage."""

from __future__ import annotations

import pytest

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.pipelines.spec import parse_rerank
from braid.ranker.identifiers import IdentifierScheme
from braid.ranker.prompt_layout import PromptTemplate, build_prompt
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker, parse_permutation
from braid.ranker.sliding_window import sliding_rerank

DOCS = [
    ("cat", "The cat sat on the mat all afternoon."),
    ("aspirin", "Daily low-dose aspirin lowers the risk of a first heart attack in adults."),
    ("football", "Weekend football results and league tables."),
    ("empty", ""),
]
QUERY = "does aspirin prevent heart attacks"


@pytest.fixture(scope="module")
def first_ranker(smollm2) -> BlockRanker:
    return BlockRanker(RerankSpec(mode="first", window=4, stride=2), smollm2)


@pytest.mark.parametrize("mode", ["first", "attention", "generate"])
def test_each_mode_returns_every_candidate_once(smollm2, mode):
    ranker = BlockRanker(RerankSpec(mode=mode, window=4, stride=2), smollm2)
    ranked = ranker.rerank(QUERY, DOCS)
    assert sorted(doc_id for doc_id, _ in ranked) == sorted(doc_id for doc_id, _ in DOCS)
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True)


def test_attention_scoring_finds_the_relevant_passage(smollm2):
    # The one unambiguous case: a zero-shot 135M model's attention still lands on the passage about the query.
    ranker = BlockRanker(RerankSpec(mode="attention", window=4, stride=2), smollm2)
    assert ranker.rerank(QUERY, DOCS)[0][0] == "aspirin"


def test_one_window_scores_are_the_first_token_logits(first_ranker):
    scores = first_ranker.score_window(QUERY, [text for _, text in DOCS])
    ranked = dict(first_ranker.rerank(QUERY, DOCS))
    assert [ranked[doc_id] for doc_id, _ in DOCS] == pytest.approx(scores, abs=1e-4)


def test_rerank_many_equals_one_request_at_a_time(first_ranker):
    # Two single-window requests share one forward; the third is longer than the window and slides on its own.
    requests = [(QUERY, DOCS[:4]), ("weekend football results", DOCS[1:5]), (QUERY, DOCS)]
    together = first_ranker.rerank_many(requests)
    for (query, docs), got in zip(requests, together, strict=True):
        expected = first_ranker.rerank(query, docs)
        assert [doc_id for doc_id, _ in got] == [doc_id for doc_id, _ in expected]
        assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=1e-4)


def test_long_lists_slide_and_keep_every_document(smollm2):
    ranker = BlockRanker(RerankSpec(mode="attention", window=3, stride=1), smollm2)
    many = [(f"d{i}", text) for i, (_, text) in enumerate(DOCS * 2)]
    ranked = ranker.rerank(QUERY, many)
    assert sorted(doc_id for doc_id, _ in ranked) == sorted(doc_id for doc_id, _ in many)
    assert [score for _, score in ranked] == [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]


def test_sliding_window_moves_the_best_item_from_the_tail_to_the_top():
    calls = []

    def best_is_largest(items):
        calls.append(list(items))
        return sorted(items, reverse=True)

    assert sliding_rerank(7, 3, 2, best_is_largest)[0] == 6
    assert calls[0] == [4, 5, 6] and calls[-1][0] == 0  # back to front, ending at the head


def test_the_listwise_prompt_encodes_the_window_as_one_text_at_a_time_would(smollm2):
    tokenizer = smollm2.tokenizer
    texts = ["the dog   barks\nloudly", " \t ", "heat " * 40]
    prompt = build_prompt(tokenizer, PromptTemplate.for_tokenizer(tokenizer), QUERY, texts, list("ABC"), [1, 2, 3], 16)

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    bodies = ["[A] the dog barks loudly", "[B] (empty)", "[C] " + " ".join(["heat"] * 40)]  # whitespace folded
    assert prompt.documents == tuple(tuple(encode(body)[:15] + encode("\n")) for body in bodies)


def test_permutation_parsing_tolerates_repeats_and_omissions():
    assert parse_permutation("[B] > [B] > [Z] > [A]", ["A", "B", "C"]) == [1, 0, 2]


def test_identifier_scheme_runs_out_with_a_clear_error(smollm2):
    scheme = IdentifierScheme.for_tokenizer(smollm2.tokenizer)
    assert scheme.capacity >= 100 and scheme.labels[:3] == ("A", "B", "C")
    with pytest.raises(BraidError, match=r"only \d+ single-token identifiers; use a window of at most"):
        scheme.take(scheme.capacity + 1)


def test_too_many_documents_for_the_prompt_budget(smollm2):
    with pytest.raises(BraidError, match="more than max_prompt_tokens = 1000; lower window or max_doc_tokens"):
        BlockRanker(RerankSpec(window=20, max_doc_tokens=160, max_prompt_tokens=1000), smollm2)
    with pytest.raises(BraidError, match="more than the model's context of 8192"):
        BlockRanker(RerankSpec(mode="generate", window=100, stride=10, max_doc_tokens=160), smollm2)


def test_bad_settings_name_the_allowed_values(smollm2):
    with pytest.raises(BraidError, match="mode must be one of first, attention, learned, generate"):
        parse_rerank({"mode": "pairwise"}, "p.toml")
    with pytest.raises(BraidError, match=r"layers \[30\] out of range: the model has layers 0..29"):
        BlockRanker(RerankSpec(mode="attention", layers=(30,)), smollm2)
    with pytest.raises(BraidError, match="unknown attention backend 'cuda-magic' \\(allowed: torch"):
        BlockRanker(RerankSpec(backend="cuda-magic"), smollm2)
    with pytest.raises(BraidError, match="empty query"):
        BlockRanker(RerankSpec(window=4, stride=2), smollm2).rerank("  ", DOCS)


def test_a_tokenizer_without_chat_template_gets_the_plain_layout(smollm2, caplog):
    tokenizer = smollm2.tokenizer
    saved = tokenizer.chat_template
    tokenizer.chat_template = None
    try:
        template = PromptTemplate.for_tokenizer(tokenizer)
        with pytest.raises(BraidError, match="no chat template and require_chat_template is set"):
            PromptTemplate.for_tokenizer(tokenizer, require_chat_template=True)
    finally:
        tokenizer.chat_template = saved
    assert not template.chat and "plain-text prompt layout" in caplog.text
    prompt = build_prompt(tokenizer, template, QUERY, ["a", ""], ["A", "B"], [1, 2], 16)
    assert tokenizer.decode(prompt.query).endswith("Answer: [")
    assert tokenizer.decode(prompt.documents[1]) == "[B] (empty)\n"


def test_unsupported_architectures_and_missing_models_are_refused(tmp_path):
    from transformers import BertConfig

    from braid.ranker.llm_source import load_llm

    BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(BraidError, match="is a 'bert' model; the block-sparse ranker supports llama, mistral, qwen2"):
        load_llm(str(tmp_path))
    with pytest.raises(BraidError, match="does not exist"):
        load_llm(str(tmp_path / "missing.gguf"))


def test_rerank_stage_in_a_pipeline(tiny_beir, tmp_path, smollm2):
    path = tmp_path / "p.toml"
    path.write_text('name = "r"\n[[retrievers]]\nkind = "bm25"\n[rerank]\nmode = "attention"\ndepth = 2\n')
    spec = load_pipeline(str(path))
    assert spec.rerank.depth == 2 and spec.rerank.mode == "attention"
    pipeline = open_pipeline(spec, open_dataset_dir(tiny_beir), tmp_path / "indexes")
    hits, timings = pipeline.search_explained("cat fish", 3)  # BM25 matches three of the four documents
    assert "rerank" in timings and len(hits) == 3
    assert all("rerank" in hit.stages for hit in hits[:2]) and "rerank" not in hits[2].stages
    assert hits[2].score < hits[1].score
    batch = pipeline.batch_search({"q1": "cat fish"}, 3)
    assert [hit.doc_id for hit in batch["q1"]] == [hit.doc_id for hit in hits]
