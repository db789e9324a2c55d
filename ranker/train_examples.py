"""Training examples for the in-context ranker: judged queries with hard negatives mined by a braid pipeline.

Hard negatives (documents a first stage ranks high that the qrels do not mark relevant) are what a reranker
must learn to push down; random negatives are too easy to teach it anything (Karpukhin et al., DPR, 2020; the
BlockRank and FIRST recipes train on first-stage candidates the same way). Unjudged documents count as
negatives, as in those recipes; a document whose id equals the query id (ArguAna) is never used.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.retriever.protocol import Retriever


@dataclass(frozen=True)
class TrainExample:
    """One judged query: its relevant documents (best grade first) and ranked hard negatives, as text."""

    source: str
    query_id: str
    query: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]

    def window(self, size: int, max_positives: int, rng: random.Random) -> tuple[list[str], list[int]]:
        """Texts of one prompt (shuffled) and the indices of its positives.

        Up to ``max_positives`` positives (drawn from the relevant ones), the rest hard negatives drawn from the
        mined list; fewer than ``size`` texts when the example has too few negatives.
        """
        n_pos = min(max_positives, len(self.positives), size - 1)
        positives = rng.sample(self.positives, n_pos)
        negatives = rng.sample(self.negatives, min(size - n_pos, len(self.negatives)))
        texts = [(text, True) for text in positives] + [(text, False) for text in negatives]
        rng.shuffle(texts)
        return [text for text, _ in texts], [i for i, (_, relevant) in enumerate(texts) if relevant]


def mine_examples(
    first_stage: Retriever,
    dataset: Dataset,
    split: str,
    depth: int,
    rel_threshold: int | None = None,
) -> list[TrainExample]:
    """Examples of every query judged in ``split`` with at least one relevant document and one negative."""
    threshold = dataset.default_rel_threshold if rel_threshold is None else rel_threshold
    qrels = dataset.qrels(split)
    queries = dataset.split_queries(split)
    if not queries:
        raise BraidError(f"dataset {dataset.name!r} has no queries judged in split {split!r}")
    runs = first_stage.batch_search(queries, depth)
    corpus = {doc.doc_id: doc.contents for doc in dataset.iter_corpus()}
    examples = []
    for qid, text in tqdm(queries.items(), desc=f"examples {dataset.name}/{split}", unit="q", file=sys.stderr):
        judged = qrels.get(qid, {})
        relevant = sorted((doc for doc, grade in judged.items() if grade >= threshold and doc in corpus and doc != qid),
                          key=lambda doc: -judged[doc])  # fmt: skip
        negatives = [
            hit.doc_id
            for hit in runs.get(qid, [])
            if judged.get(hit.doc_id, 0) < threshold and hit.doc_id != qid and hit.doc_id in corpus
        ]
        if relevant and negatives:
            examples.append(
                TrainExample(
                    source=f"{dataset.name}/{split}",
                    query_id=qid,
                    query=text,
                    positives=tuple(corpus[doc] for doc in relevant),
                    negatives=tuple(corpus[doc] for doc in negatives),
                )
            )
    if not examples:
        raise BraidError(
            f"no training examples in {dataset.name}/{split}: no judged query has both a relevant document "
            f"(grade >= {threshold}) and a non-relevant one in the first stage's top {depth}"
        )
    return examples


def load_examples(
    sources: Sequence[tuple[Dataset, str]],
    open_first_stage: Callable[[Dataset], AbstractContextManager[Retriever]],
    depth: int,
) -> list[TrainExample]:
    """Mine examples from each (dataset, split) with the first stage ``open_first_stage(dataset)`` opens (a braid
    pipeline, from the command line), closed again after its dataset."""
    for dataset, split in sources:
        dataset.qrels(split)  # every missing split fails (naming the available ones) before any index is built
    examples: list[TrainExample] = []
    for dataset, split in sources:
        with open_first_stage(dataset) as first_stage:
            examples += mine_examples(first_stage, dataset, split, depth)
    return examples
