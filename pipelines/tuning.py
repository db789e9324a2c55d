"""Fusion tuning: grid search of per-retriever weights (and the fusion method) on a train or dev split.

Each retriever runs once over the split's queries; every candidate setting is then a matrix product over the
cached lists (the same :mod:`braid.retriever.fusion` code the pipeline runs), scored with the split's qrels. Weights
are searched on the simplex (non-negative, summing to 1) with a fixed step, as in Bruch et al.'s analysis of
convex combinations; RRF is searched over its k as well. Cascade stages are not part of the search: they
reorder the fused head afterwards, whatever the weights.

The best setting, with its provenance, goes into the pipeline's ``[fusion]``, or becomes one collection's own
``[per_dataset.<dataset>]`` setting (:meth:`PipelineSpec.with_fusion`).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.metrics import NdcgJudge, evaluate
from braid.common.trec_run import drop_self_hits
from braid.pipelines.pipeline import Pipeline
from braid.pipelines.spec import PipelineSpec, TunedFusion, feeders
from braid.retriever.fusion import METHODS, NORMALIZATIONS, FusionSpec, ListShape, fusion_inputs
from braid.retriever.hit import Hit

TUNABLE_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map")
EVAL_DEPTH = 100  # every tunable metric but MAP is decided within the top 100; MAP is approximated there
# What a search tries unless told otherwise (``braid tune``'s defaults, the benchmarks', the fitted weights').
STEP = 0.1
RRF_KS = (10.0, 30.0, 60.0, 100.0)
WEIGHTED_NORMALIZATIONS = ("minmax", "zscore")


@dataclass(frozen=True)
class Trial:
    fusion: FusionSpec
    value: float


def simplex_grid(width: int, step: float, option: str = "--step") -> list[tuple[float, ...]]:
    """Weight vectors with entries in multiples of ``step`` that sum to 1 (at least one retriever kept); ``option``
    names the step in the error."""
    if not 0 < step <= 1:
        raise BraidError(f"{option} must be in (0, 1], got {step}")
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise BraidError(f"{option} must divide 1 evenly (0.5, 0.25, 0.2, 0.1, 0.05, ...), got {step}")
    grid = []
    for combo in itertools.product(range(units + 1), repeat=width):
        if sum(combo) == units:
            grid.append(tuple(round(c * step, 10) for c in combo))
    return grid


def check_tuning(
    spec: PipelineSpec,
    splits: list[str],
    metric: str,
    step: float | None,
    methods: tuple[str, ...],
    normalizations: tuple[str, ...],
) -> list[tuple[float, ...]]:
    """Validate a tuning request before anything runs or is built; returns the weight grid (none without a
    ``step``: fitted weights, :mod:`braid.pipelines.weight_fit`)."""
    if metric not in TUNABLE_METRICS:
        raise BraidError(f"metric must be one of {', '.join(TUNABLE_METRICS)}, got {metric!r}")
    if "test" in splits:
        raise BraidError("tuning on the test split would leak into the evaluation; tune on a train or dev split")
    if len(spec.retrievers) < 2:
        raise BraidError(f"pipeline {spec.name!r} has one retriever: there are no fusion weights to tune")
    for method in methods:
        if method not in METHODS:
            raise BraidError(f"methods must be among {', '.join(METHODS)}, got {method!r}")
    for normalization in normalizations:
        if normalization not in NORMALIZATIONS:
            raise BraidError(f"normalizations must be among {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    return [] if step is None else simplex_grid(len(spec.retrievers), step)


@dataclass
class SplitLists:
    """One collection's split with every retriever's ranked list per query: run once, fused many times."""

    dataset: Dataset
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    lists: list[dict[str, list[Hit]]]  # one {qid: hits} per retriever, in the pipeline's order
    shapes: list[ListShape] | None = None  # each retriever's depth and unmatched score, as the pipeline fuses them

    @property
    def label(self) -> str:
        return f"{self.dataset.name}/{self.split}"


def split_lists(pipeline: Pipeline, dataset: Dataset, split: str) -> SplitLists:
    """Run the pipeline's retrievers (no fusion) over a split's judged queries."""
    queries = dataset.judged_queries(split)
    lists = pipeline.first_stage_lists(queries, pipeline.depth)
    return SplitLists(dataset, split, queries, dataset.known_qrels(split), lists, pipeline.list_shapes)


def fusion_settings(
    methods: tuple[str, ...], normalizations: tuple[str, ...], rrf_ks: tuple[float, ...]
) -> list[FusionSpec]:
    """The fusion settings a search tries, weights aside: weighted per normalization, then RRF per k."""
    settings = [FusionSpec("weighted", normalization=n) for n in normalizations if "weighted" in methods]
    return settings + [FusionSpec("rrf", k=k) for k in rrf_ks if "rrf" in methods]


def grid_values(
    data: SplitLists,
    settings: list[FusionSpec],
    grid: list[tuple[float, ...]],
    metric: str,
    keep_self_hits: bool = False,
    progress: tqdm | None = None,
) -> np.ndarray:
    """``metric`` of every (setting, weight vector) on one split: a settings x grid matrix."""
    values = np.zeros((len(settings), len(grid)))
    # nDCG@10 (the default) needs each query's top 10 only, scored without building runs: the fast path. One extra
    # hit per query stands in for the query's own id, dropped as evaluation drops it.
    judge = NdcgJudge(data.qrels, 10) if metric == "ndcg@10" else None
    for s, setting in enumerate(settings):
        inputs = {
            qid: fusion_inputs([per_query.get(qid, []) for per_query in data.lists], setting, data.shapes)
            for qid in data.queries
        }
        for g, weights in enumerate(grid):
            vector = np.asarray(weights)
            if judge is not None:
                runs = {}
                for qid, x in inputs.items():
                    ids = [x.doc_ids[row] for row, _ in x.top(vector, judge.k + 1)]
                    runs[qid] = ids if keep_self_hits else [doc for doc in ids if doc != qid]
                values[s, g] = judge.mean(runs)
            else:
                run = {
                    qid: {x.doc_ids[row]: score for row, score in x.top(vector, EVAL_DEPTH + 1, reuse_id_order=True)}
                    for qid, x in inputs.items()
                }
                if not keep_self_hits:
                    run = drop_self_hits(run)
                values[s, g] = evaluate(run, data.qrels, data.dataset.default_rel_threshold).aggregate[metric]
            if progress is not None:
                progress.update()
    return values


def grid_trials(
    cached: list[SplitLists],
    names: list[str],
    settings: list[FusionSpec],
    grid: list[tuple[float, ...]],
    metric: str,
    keep_self_hits: bool = False,
    progress: tqdm | None = None,
) -> list[Trial]:
    """Every (setting, weight vector) valued by its mean ``metric`` over the cached splits, best first; among equal
    values the earlier setting (weighted before RRF, coarser before finer) comes first."""
    totals = sum(grid_values(data, settings, grid, metric, keep_self_hits, progress) for data in cached)
    trials = [
        Trial(replace(setting, weights=dict(zip(names, weights, strict=True))), totals[s, g] / len(cached))
        for s, setting in enumerate(settings)
        for g, weights in enumerate(grid)
    ]
    trials.sort(key=lambda trial: -trial.value)  # stable
    return trials


def tune_fusion(
    targets: list[tuple[Pipeline, Dataset, str]],
    metric: str = "ndcg@10",
    step: float = STEP,
    methods: tuple[str, ...] = METHODS,
    normalizations: tuple[str, ...] = WEIGHTED_NORMALIZATIONS,
    rrf_ks: tuple[float, ...] = RRF_KS,
    keep_self_hits: bool = False,
) -> tuple[TunedFusion, list[Trial]]:
    """Best fusion by ``metric``, averaged over one or more (pipeline, dataset, split) targets that open the same
    pipeline on different collections; returns it with its provenance, and every trial, best first."""
    pipeline = targets[0][0]
    names = pipeline.retriever_names
    grid = check_tuning(pipeline.spec, [split for *_, split in targets], metric, step, methods, normalizations)
    cached = [split_lists(target, dataset, split) for target, dataset, split in targets]
    settings = fusion_settings(methods, normalizations, rrf_ks)
    progress = tqdm(total=len(settings) * len(grid) * len(cached), desc="tune", unit="setting", file=sys.stderr)
    trials = grid_trials(cached, names, settings, grid, metric, keep_self_hits, progress)
    progress.close()
    best = trials[0]
    tuned = {
        "datasets": [data.label for data in cached],
        "metric": metric,
        "value": round(best.value, 6),
        "queries": sum(len(data.queries) for data in cached),
        "step": step,
    }
    return TunedFusion(best.fusion, tuned), trials


def tuned_subset(spec: PipelineSpec, names: Sequence[str]) -> PipelineSpec:
    """``spec`` with only the retrievers ``names`` (in the pipeline's order, equal weights), to tune their weights
    alone (``braid tune --retrievers``): :func:`widened` then gives the others weight 0. A rescoring retriever keeps
    the retrievers whose tops it scores, so that it scores what it scores in ``spec``."""
    known = [retriever.name for retriever in spec.retrievers]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BraidError(f"--retrievers: unknown {', '.join(map(repr, unknown))} (allowed: {', '.join(known)})")
    if len(set(names)) < 2:
        raise BraidError(f"--retrievers: name two or more of {', '.join(known)} to fuse")
    kept = tuple(retriever for retriever in spec.retrievers if retriever.name in names)
    for retriever in kept:
        fed_by = feeders(retriever, spec.retrievers) if retriever.scores_top else ()
        missing = [name for name in fed_by if name not in names]
        if missing:
            raise BraidError(
                f"--retrievers: {retriever.name!r} scores the top of {', '.join(fed_by)}: add {', '.join(missing)}"
            )
    assert spec.fusion is not None  # check_tuning refused a pipeline of one retriever
    fusion = replace(spec.fusion, weights={retriever.name: 1.0 for retriever in kept})
    return replace(spec, retrievers=kept, fusion=fusion, per_dataset={}, tuned=None)


def widened(tuned: TunedFusion, spec: PipelineSpec) -> TunedFusion:
    """A fusion tuned over some of ``spec``'s retrievers (:func:`tuned_subset`), every other one at weight 0."""
    weights = tuned.fusion.weights or {}
    fusion = replace(tuned.fusion, weights={r.name: float(weights.get(r.name, 0.0)) for r in spec.retrievers})
    return TunedFusion(fusion, {**(tuned.tuned or {}), "retrievers": list(weights)})
