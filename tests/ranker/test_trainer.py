"""`braid train ranker`: the BlockRank objective, hard-negative mining, a training loop that learns, checkpoints
that load by path and resume exactly, gradient checkpointing that changes nothing, and clear errors."""

from __future__ import annotations

import json
import math
import random
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from braid.common.dataset_resolver import open_dataset_dir
from braid.common.errors import BraidError
from braid.indexer.index_store import build_index
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.reranker import BlockRanker
from braid.ranker.train_examples import TrainExample, load_examples
from braid.ranker.train_objective import BlockRankLoss, attention_scores
from braid.ranker.trainer import RankerTrainer, TrainConfig
from braid.retriever.bm25_retriever import BM25Retriever
from braid.service.cli.main import main

EXAMPLES = [
    TrainExample("toy/train", "q1", "which animal barks", ("the dog barks loudly",),
                 ("the cat sleeps", "fish swim in water", "birds fly south")),
    TrainExample("toy/train", "q2", "what melts ice", ("heat melts ice quickly",),
                 ("stones are hard", "the moon is far", "trees grow slowly")),
    TrainExample("toy/train", "q3", "where do fish live", ("fish swim in water",),
                 ("the dog barks loudly", "heat melts ice quickly", "the cat sleeps")),
]  # fmt: skip


def tiny_config(model: Path, **changes) -> TrainConfig:
    settings = dict(model=str(model), window=3, max_doc_tokens=16, max_query_tokens=8, steps=4, batch_size=3,
                    lr=3e-3, warmup=0.0, score_layer=1, probe_tokens=2, dtype="float32", device="cpu",
                    save_every=2)  # fmt: skip
    return TrainConfig(**(settings | changes))


def test_objective_is_cross_entropy_plus_weighted_infonce():
    logits = torch.tensor([0.0, 2.0, 1.0, -1.0])
    # Two heads, one probe token, three documents; mass does not sum to 1 (the instruction takes some).
    mass = torch.tensor([[[0.2, 0.1, 0.1]], [[0.1, 0.3, 0.2]]])
    total, lm, attention = BlockRankLoss(aux_weight=0.1, temperature=0.5)(logits, mass, [1, 2], [3, 1, 2])
    expected_lm = -torch.log_softmax(logits, 0)[1]  # the first positive's identifier token is id 1
    shares = torch.tensor([(0.5 + 1 / 6) / 2, (0.25 + 0.5) / 2, (0.25 + 1 / 3) / 2])
    assert torch.allclose(attention_scores(mass), shares)
    scaled = shares / 0.5
    expected_aux = torch.logsumexp(scaled, 0) - torch.logsumexp(scaled[1:], 0)
    assert math.isclose(lm.item(), expected_lm.item(), rel_tol=1e-6)
    assert math.isclose(attention.item(), expected_aux.item(), rel_tol=1e-6)
    assert math.isclose(total.item(), expected_lm.item() + 0.1 * expected_aux.item(), rel_tol=1e-6)
    with pytest.raises(ValueError, match="at least one relevant"):
        BlockRankLoss()(logits, mass, [], [3, 1, 2])


def test_windows_hold_the_positive_and_hard_negatives_shuffled():
    example = EXAMPLES[0]
    texts, positives = example.window(3, 1, random.Random(0))
    assert len(texts) == 3 and [texts[i] for i in positives] == ["the dog barks loudly"]
    assert set(texts) - {"the dog barks loudly"} <= set(example.negatives)
    seen = {tuple(example.window(4, 1, random.Random(seed))[1]) for seed in range(20)}
    assert len(seen) > 1  # the positive's slot varies, so position is never the answer


def test_hard_negatives_come_from_the_first_stage_and_skip_relevant_and_self_hits(tiny_beir, tmp_path):
    dataset = open_dataset_dir(tiny_beir)
    path, _, _ = build_index(dataset, "bm25", {}, index_root=tmp_path / "indexes")
    bm25 = BM25Retriever(path)
    examples = load_examples([(dataset, "test")], lambda _: nullcontext(bm25), depth=10)
    by_query = {example.query_id: example for example in examples}
    corpus = dataset.corpus()
    # q1 "cat fish": d2 relevant (grade 1), d1 judged 0 -> a negative; the BM25 hits d3 (fish) too.
    assert by_query["q1"].positives == (corpus["d2"].contents,)
    assert set(by_query["q1"].negatives) == {corpus["d1"].contents, corpus["d3"].contents}
    # Query "d4" (ArguAna-style id) never sees document d4 as a negative.
    assert corpus["d4"].contents not in by_query["d4"].negatives
    with pytest.raises(BraidError, match="no 'train' split"):
        load_examples([(dataset, "train")], lambda _: nullcontext(bm25), depth=10)


def test_training_learns_saves_a_loadable_model_and_resumes_exactly(tiny_lm_dir, tmp_path):
    config = tiny_config(tiny_lm_dir, steps=16, save_every=8, lr=2e-2)
    trainer = RankerTrainer(config, tmp_path / "run", EXAMPLES)
    summary = trainer.train()
    losses = [entry["loss"] for entry in summary["history"]]
    assert len(losses) == 16 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5  # it fits three examples
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-000008", "checkpoint-000016", "final", "training.json"]
    assert json.loads((run / "training.json").read_text())["finished"] is True

    # The run folder loads as the ranker's model by path and scores exactly as the model it trained.
    spec = RerankSpec(model=str(run), window=3, stride=1, max_doc_tokens=16, max_query_tokens=8, cache_mb=0,
                      device="cpu")  # fmt: skip
    loaded, trained = BlockRanker(spec), BlockRanker(spec, trainer.lm)
    assert loaded.lm.source == str(run / "final")
    for example in EXAMPLES:
        texts = [example.positives[0], *example.negatives[:2]]
        assert loaded.score_window(example.query, texts) == pytest.approx(trained.score_window(example.query, texts))

    # A run killed after step 8 (its checkpoint-000008 and record left behind) resumes to the same weights.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(run / "checkpoint-000008", resumed / "checkpoint-000008")
    shutil.copy(run / "training.json", resumed / "training.json")
    again = RankerTrainer(config, resumed, EXAMPLES).train()
    assert [e["loss"] for e in again["history"]] == pytest.approx(losses, rel=1e-5)
    from safetensors.torch import load_file

    first, second = load_file(run / "final" / "model.safetensors"), load_file(resumed / "final" / "model.safetensors")
    assert all(torch.allclose(first[name], second[name], atol=1e-6) for name in first)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_lm_dir):
    from braid.ranker.llm_source import load_llm

    config = tiny_config(tiny_lm_dir)
    grads = []
    for checkpointing in (False, True):
        lm = load_llm(str(tiny_lm_dir), "float32", "cpu")
        ranker = BlockRanker(config.rerank_spec(), lm)
        lm.model.requires_grad_(True)
        ranker.forward.checkpoint = checkpointing
        texts, positives = EXAMPLES[0].window(3, 1, random.Random(0))
        prompt = ranker.prompt(texts, EXAMPLES[0].query)
        result = ranker.forward(prompt, [1], 2, need_logits=True)
        total, _, _ = BlockRankLoss()(result.last_logits, result.doc_attention[1], positives, prompt.label_token_ids)
        total.backward()
        grads.append({name: p.grad.clone() for name, p in lm.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert all(torch.allclose(grads[0][name], grads[1][name], atol=1e-6) for name in grads[0])


def test_bad_training_requests_exit_2_with_a_message(tiny_beir, tmp_path, capsys):
    base = ["train", "ranker", "--dataset", str(tiny_beir), "--split", "test", "--index-dir", str(tmp_path / "ix")]
    cases = [
        (["--output", str(tmp_path / "a"), "--window", "1"], "window must be >= 2"),
        (["--output", str(tmp_path / "a"), "--lr", "3"], "lr must be in (0, 1)"),
        (["--output", str(tmp_path / "a"), "--split", "dev"], "give one --split for all datasets or one per"),
        (["--output", str(tmp_path / "a"), "--negatives-pipeline", "nope"], "nope"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main([*base, "--output", str(tmp_path / "file"), "--model", "/nonexistent"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["train", "ranker", "--dataset", str(tiny_beir), "--output", str(tmp_path / "b")]) == 2
    assert "no 'train' split (available: test)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--output", str(tmp_path / "c"), "--dtype", "float16"])
    assert "invalid choice: 'float16'" in capsys.readouterr().err
