"""Fitting a score head for ``mode = "learned"`` (``braid train ranker --head``): forward passes only.

For each training source (a collection and a train/dev split), the first stage's top ``window`` of every judged
query with a relevant document among them is laid out as one BlockRank prompt in first-stage order, exactly as
the pipeline will rerank it, and one walk through the frozen LM gives its feature matrix
(:mod:`braid.ranker.attention_features`). Windows are saved per source as they are computed (atomically, every
``save_every`` queries), so a killed run resumes where it stopped and a finished one re-fits in seconds.

The penalty ``l2`` and the LLM's weight in the fusion with the first stage are chosen by k-fold cross-validation
over the windows (nDCG@10 of the reranked window, each source weighing the same); the head is then fitted on
every window with the chosen penalty. Only the splits named are read: the collections' test splits stay unseen.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from braid.common.atomic_file import atomic_output
from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.metrics import NdcgJudge
from braid.ranker.attention_features import FeatureLayout
from braid.ranker.score_head import ScoreHead, TrainingWindow, fit_head
from braid.retriever.fusion import fuse_with_first_stage
from braid.retriever.protocol import Retriever

HEAD_FILE = "head.json"
FEATURES = ("attention", "calibrated", "first", "length", "likelihood")


@dataclass(frozen=True)
class HeadConfig:
    """Settings of one head fit (the defaults made the built-in head; see its provenance)."""

    model: str = "smollm2"
    window: int = 20
    max_doc_tokens: int = 128
    max_query_tokens: int = 64
    features: tuple[str, ...] = ("likelihood",)
    layers: tuple[int, ...] = tuple(range(16))
    probe_tokens: int = 8
    max_queries: int = 100
    l2_grid: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)
    # Down to 0.1: over a strong first stage (the hybrid) the LLM earns a small share only.
    fusion_grid: tuple[float, ...] = (1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
    folds: int = 5
    seed: int = 0
    device: str = "auto"
    save_every: int = 10

    def __post_init__(self) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown or not self.features:
            raise BraidError(f"--head-features: unknown {unknown or 'empty'} (allowed: {', '.join(FEATURES)})")
        if self.window < 2:
            raise BraidError(f"--window must be >= 2, got {self.window}")
        if self.folds < 2:
            raise BraidError(f"--folds must be >= 2, got {self.folds}")
        if self.max_queries < 1:
            raise BraidError(f"--max-queries must be >= 1, got {self.max_queries}")
        if any(l2 < 0 for l2 in self.l2_grid) or not self.l2_grid:
            raise BraidError(f"the l2 grid must be non-negative values, got {list(self.l2_grid)}")
        if not self.fusion_grid or any(not 0.0 <= w <= 1.0 for w in self.fusion_grid):
            raise BraidError(f"fusion weights must be in [0, 1], got {list(self.fusion_grid)}")

    def layout(self, heads: int) -> FeatureLayout:
        wanted = set(self.features)
        attention = bool(wanted & {"attention", "calibrated"})
        return FeatureLayout(
            self.layers if attention else (),
            heads,
            self.probe_tokens,
            attention="attention" in wanted,
            calibrated="calibrated" in wanted,
            first="first" in wanted,
            length="length" in wanted,
            likelihood="likelihood" in wanted,
        )


@dataclass
class JudgedWindow:
    """One training window: the first stage's ids and scores, the LM's features, and the qrels' grades."""

    source: str
    query_id: str
    doc_ids: list[str]
    first_stage: list[float]
    features: torch.Tensor
    grades: torch.Tensor

    def training(self) -> TrainingWindow:
        return TrainingWindow(self.features, self.grades, self.source)


def source_name(dataset: Dataset, split: str) -> str:
    return f"{dataset.name}/{split}"


def collect_windows(
    dataset: Dataset,
    split: str,
    open_first_stage: Callable[[Dataset], AbstractContextManager[Retriever]],
    features: Callable[[str, list[str]], torch.Tensor],
    config: HeadConfig,
    cache: Path,
) -> list[JudgedWindow]:
    """The judged windows of one source, computing only those ``cache`` does not hold yet."""
    source = source_name(dataset, split)
    qrels = dataset.known_qrels(split)
    threshold = dataset.default_rel_threshold
    queries = dataset.judged_queries(split)
    with open_first_stage(dataset) as first_stage:
        # One more than the window so that a self-hit (ArguAna: the query is a document) can be dropped.
        runs = first_stage.batch_search(queries, config.window + 1)
    lists = {qid: [hit for hit in runs.get(qid, []) if hit.doc_id != qid][: config.window] for qid in queries}
    useful = [
        qid
        for qid in queries
        if len(lists[qid]) >= 2 and any(qrels.get(qid, {}).get(hit.doc_id, 0) >= threshold for hit in lists[qid])
    ]
    if not useful:
        raise BraidError(f"{source}: no judged query has a relevant document in the first stage's top {config.window}")
    random.Random(config.seed).shuffle(useful)
    chosen = useful[: config.max_queries]
    done: dict[str, dict[str, Any]] = torch.load(cache, weights_only=False) if cache.is_file() else {}
    corpus = {doc.doc_id: doc.contents for doc in dataset.iter_corpus()}
    todo = [qid for qid in chosen if qid not in done]
    for count, qid in enumerate(tqdm(todo, desc=f"features {source}", unit="q", file=sys.stderr), 1):
        hits = lists[qid]
        matrix = features(queries[qid], [corpus.get(hit.doc_id, "") for hit in hits])
        done[qid] = {"doc_ids": [hit.doc_id for hit in hits], "scores": [hit.score for hit in hits], "x": matrix}
        if count % config.save_every == 0 or count == len(todo):
            _save(done, cache)
    windows = []
    for qid in chosen:
        entry = done[qid]
        grades = torch.tensor([float(qrels.get(qid, {}).get(doc, 0)) for doc in entry["doc_ids"]])
        windows.append(JudgedWindow(source, qid, entry["doc_ids"], entry["scores"], entry["x"], grades))
    return windows


def _save(done: dict[str, dict[str, Any]], cache: Path) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(cache) as staging:
        torch.save(done, staging)


def source_ndcg(
    windows: Sequence[JudgedWindow], scores: Sequence[np.ndarray], judges: dict[str, NdcgJudge]
) -> dict[str, float]:
    """Each source's mean nDCG@10 of its windows reordered by ``scores``."""
    per_source: dict[str, list[float]] = {}
    for window, values in zip(windows, scores, strict=True):
        order = sorted(range(len(values)), key=lambda i: (-float(values[i]), i))
        per_source.setdefault(window.source, []).append(
            judges[window.source](window.query_id, [window.doc_ids[i] for i in order])
        )
    return {source: float(np.mean(values)) for source, values in per_source.items()}


def cross_validate(
    windows: Sequence[JudgedWindow], layout: FeatureLayout, config: HeadConfig, judges: dict[str, NdcgJudge]
) -> dict[tuple[float, float], dict[str, float]]:
    """Held-out nDCG@10 per source of every (l2, fusion weight) on the grids."""
    if len(windows) < 2 * config.folds:
        raise BraidError(
            f"{len(windows)} training windows are too few for {config.folds}-fold cross-validation: give more queries "
            "(--max-queries, another --dataset) or fewer --folds"
        )
    order = list(range(len(windows)))
    random.Random(config.seed).shuffle(order)
    fold_of = {index: position % config.folds for position, index in enumerate(order)}
    table: dict[tuple[float, float], float] = {}
    for l2 in config.l2_grid:
        held_out: list[np.ndarray | None] = [None] * len(windows)
        for fold in range(config.folds):
            train = [windows[i].training() for i in range(len(windows)) if fold_of[i] != fold]
            mean, std, weight = fit_head(train, layout, l2)
            for i in range(len(windows)):
                if fold_of[i] == fold:
                    held_out[i] = (((windows[i].features.float() - mean) / std) @ weight).numpy().astype(np.float64)
        for fusion in config.fusion_grid:
            fused = [fuse_with_first_stage(s, w.first_stage, fusion) for s, w in zip(held_out, windows, strict=True)]
            table[(l2, fusion)] = source_ndcg(windows, fused, judges)
    return table


def fit_score_head(
    windows: Sequence[JudgedWindow], layout: FeatureLayout, config: HeadConfig, judges: dict[str, NdcgJudge]
) -> tuple[ScoreHead, dict[str, Any]]:
    """Choose l2 and the fusion weight by cross-validation, fit on every window, and report what it measured."""
    started = time.monotonic()
    table = cross_validate(windows, layout, config, judges)
    means = {key: float(np.mean(list(values.values()))) for key, values in table.items()}
    # Ties go to the larger LLM weight, then the smaller penalty.
    (l2, fusion), best = max(means.items(), key=lambda item: (item[1], item[0][1], -item[0][0]))
    mean, std, weight = fit_head([w.training() for w in windows], layout, l2)
    first_stage = source_ndcg(windows, [np.asarray(w.first_stage) for w in windows], judges)
    alone = [key for key in means if key[1] == 1.0]
    report = {
        "windows": {source: sum(w.source == source for w in windows) for source in judges},
        "cv_ndcg@10": {
            "first_stage": float(np.mean(list(first_stage.values()))),
            "head": best,
            "head_alone": max(means[key] for key in alone) if alone else None,
            "per_source": {
                source: {"first_stage": first_stage[source], "head": table[(l2, fusion)][source]} for source in judges
            },
        },
        "cv_table": [
            {"l2": k[0], "fusion_weight": k[1], "ndcg@10": means[k], "per_source": table[k]} for k in sorted(table)
        ],
        "chosen": {"l2": l2, "fusion_weight": fusion},
        "fit_seconds": round(time.monotonic() - started, 1),
    }
    head = ScoreHead(layout, mean, std, weight, fusion, config.model, config.max_doc_tokens)
    return head, report


def window_cache(output: Path, dataset: Dataset, split: str, first_stage: str, config: HeadConfig) -> Path:
    """Where one source's windows are kept: named by everything the features depend on, so a run with other
    settings (features, layers, document cut, first stage) never reads another run's windows."""
    keys = ("model", "window", "max_doc_tokens", "max_query_tokens", "features", "layers", "probe_tokens")
    settings = {key: config_dict(config)[key] for key in keys} | {"first_stage": first_stage}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return output / "windows" / f"{dataset.name}-{split}-{digest}.pt"


def config_dict(config: HeadConfig) -> dict[str, Any]:
    data = asdict(config)
    for name in ("features", "layers", "l2_grid", "fusion_grid"):
        data[name] = list(data[name])
    return data
