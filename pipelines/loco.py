"""Leave-one-collection-out (LOCO) evaluation of fusion: how a tuned fusion does on a collection nobody tuned for.

Tuning fusion weights on a collection and reporting its test split says little about the next collection: weights
that suit one (BM25 strong on SciFact) can drag the fusion below its best retriever on another (BM25 weak on MS
MARCO). LOCO, as in cross-domain evaluation of rankers (BEIR's zero-shot protocol applied to the fusion itself),
leaves each collection out in turn: the fusion is chosen on the OTHER collections only (each one's train or dev
split where it has one, its judged queries otherwise, each collection weighing the same in the mean), then
scored on the left-out collection's test split, which it never saw.

A *family* is a rule for choosing a fusion from tuning data (a subset of the settings searched, say z-score
weights only, or RRF with equal weights and a tuned k, and an objective: the mean over the tuning collections, or,
for ``robust``, the worst margin over what the protocol asks for, a minimax choice in the spirit of distributionally
robust optimization); the protocol scores each family per left-out collection,
beside each single retriever and naive RRF (k = 60, equal weights), and says whether the family stays within
``tolerance`` of the best single retriever and at or above naive RRF everywhere. A *baseline* pipeline (say the
hybrid, when the pipeline tuned is the hybrid plus one more retriever) adds one bound: within ``tolerance`` of the
baseline as it ships, on every left-out collection; ``robust`` then also keeps the baseline's margin on the tuning
collections. *Anchored* on the baseline (:mod:`braid.pipelines.anchored_fusion`), the pipeline tuned holds the
baseline's retrievers and the target's others, so the baseline is one of the settings searched, and three families
start from it: ``anchored`` (the best mean among the baseline's weights scaled plus the rest spread over the added
retrievers), ``no-loss`` (the same among the settings at least as good as the baseline on every tuning collection),
``min-gain`` (the largest smallest gain over the baseline across the tuning collections) and ``clear-gain`` (the
best mean among the settings that beat the baseline by at least ``tolerance`` on every tuning collection, else the
baseline: the bound's own margin asked of the evidence before moving off what ships, so that a gain too small to
tell from one collection's noise never trades away another collection's quality). The default is then
chosen by that evidence, and fitted on every collection's tuning data.

Every retriever runs once per (collection, split); every setting is a matrix product over the cached lists
(:func:`braid.pipelines.tuning.grid_values`), so a LOCO run costs little more than running the retrievers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.metrics import evaluate
from braid.common.trec_run import drop_self_hits
from braid.pipelines.anchored_fusion import anchored_grid
from braid.pipelines.pipeline import Pipeline
from braid.pipelines.spec import PipelineSpec, TunedFusion
from braid.pipelines.tuning import EVAL_DEPTH, SplitLists, fusion_settings, grid_values, simplex_grid, split_lists
from braid.retriever.fusion import FusionSpec

TUNING_SPLITS = ("train", "dev")  # preferred in this order; a collection with neither is tuned on its judged queries
NAIVE_RRF = FusionSpec("rrf", k=60.0)
# The settings every family chooses among, in this order: among equal scores the earlier one wins.
SEARCHED_METHODS = ("weighted", "rrf")
SEARCHED_NORMALIZATIONS = ("zscore", "minmax")

Choice = Callable[[FusionSpec, tuple[float, ...]], bool]


def _equal(weights: tuple[float, ...]) -> bool:
    return max(weights) - min(weights) < 1e-9


FAMILIES: dict[str, tuple[str, Choice]] = {
    "joint": ("any method, normalization, k and weights", lambda setting, weights: True),
    "zscore": (
        "weighted sum of z-scores, tuned weights",
        lambda s, w: s.method == "weighted" and s.normalization == "zscore",
    ),
    "minmax": (
        "weighted sum of min-max scores, tuned weights",
        lambda s, w: s.method == "weighted" and s.normalization == "minmax",
    ),
    "rrf": ("RRF, tuned k and weights", lambda s, w: s.method == "rrf"),
    "rrf-equal": ("RRF, equal weights, tuned k", lambda s, w: s.method == "rrf" and _equal(w)),
    "robust": (
        "any setting; the one whose worst margin over max(naive RRF, best retriever - tolerance) across the tuning"
        " collections is largest (ties: the best mean)",
        lambda setting, weights: True,
    ),
}
WORST_CASE = {"robust"}  # families chosen by their worst tuning collection rather than the mean
ANCHOR_STEP = 0.1  # the anchored settings' step: alpha and the added retrievers' shares
# With an anchor: settings made from the baseline's weights (anchored_fusion.anchored_grid), three rules to choose.
ANCHORED_FAMILIES: dict[str, str] = {
    "anchored": "the baseline's weights x alpha + 1 - alpha over the added retrievers: the best mean",
    "no-loss": "anchored settings at least as good as the baseline on every tuning collection: the best mean",
    "min-gain": "the anchored setting whose smallest gain over the baseline across the tuning collections is largest"
    " (ties: the best mean; the baseline itself gains 0 everywhere)",
    "clear-gain": "anchored settings at least the tolerance better than the baseline on every tuning collection: the"
    " best mean; the baseline itself when there is none",
}


def tuning_split(dataset: Dataset) -> str:
    """The split a collection lends to tuning when it is not the one left out."""
    for split in TUNING_SPLITS:
        if split in dataset.splits:
            return split
    return "test"


@dataclass
class Collection:
    """One collection's cached lists (tuning and test split) and the metric of every setting on each."""

    name: str
    tune: SplitLists
    test: SplitLists
    tune_values: np.ndarray  # settings x grid
    test_values: np.ndarray
    singles: dict[str, float]  # retriever name -> metric on the test split
    floor: float  # on the tuning split: max(naive RRF, best single or baseline - tolerance): what `robust` must clear
    baseline: float | None = None  # the baseline pipeline, as shipped, on the test split


@dataclass
class Fold:
    left_out: str
    tuned_on: list[str]
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)  # family -> {fusion, tuning value, test value}


@dataclass
class LocoResult:
    metric: str
    names: list[str]
    collections: list[Collection]
    folds: list[Fold]
    current: dict[str, float]  # the pipeline's own fusion (as shipped) on each test split
    naive_rrf: dict[str, float]
    defaults: dict[str, TunedFusion]  # family -> its fusion fitted on every collection's tuning split
    tolerance: float
    baseline: str | None = None  # the baseline pipeline's name
    families: dict[str, str] = field(default_factory=dict)  # family -> what it chooses, in the table's order
    anchored: bool = False  # whether the baseline is held inside the pipeline tuned (its weights one setting)

    def meets(self, family: str) -> dict[str, bool]:
        """Per left-out collection: within ``tolerance`` of the best single retriever (and of the baseline, if
        any) and not below naive RRF."""
        out = {}
        for collection, fold in zip(self.collections, self.folds, strict=True):
            value = fold.chosen[family]["test"]
            bar = max(collection.singles.values())
            if collection.baseline is not None:
                bar = max(bar, collection.baseline)
            out[collection.name] = value >= bar - self.tolerance and value >= self.naive_rrf[collection.name]
        return out

    def near_baseline(self, family: str) -> dict[str, bool]:
        """Per left-out collection: within ``tolerance`` of the baseline alone (the baseline's bound by itself)."""
        return {
            c.name: fold.chosen[family]["test"] >= c.baseline - self.tolerance
            for c, fold in zip(self.collections, self.folds, strict=True)
            if c.baseline is not None
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "tolerance": self.tolerance,
            "baseline": self.baseline,
            "anchored": self.anchored,
            "families": self.families,
            "collections": [
                {
                    "left_out": c.test.label,
                    "tuned_on": fold.tuned_on,
                    "queries": len(c.test.queries),
                    "singles": {name: round(value, 6) for name, value in c.singles.items()},
                    "naive_rrf": round(self.naive_rrf[c.name], 6),
                    "pipeline_fusion": round(self.current[c.name], 6),
                    **({} if c.baseline is None else {"baseline": round(c.baseline, 6)}),
                    "families": fold.chosen,
                }
                for c, fold in zip(self.collections, self.folds, strict=True)
            ],
            "meets": {family: self.meets(family) for family in self.families},
            **(
                {}
                if self.baseline is None
                else {"near_baseline": {family: self.near_baseline(family) for family in self.families}}
            ),
            "defaults": {
                family: {"fusion": tuned.fusion.to_dict(), **(tuned.tuned or {})}
                for family, tuned in self.defaults.items()
            },
        }


def _single_values(data: SplitLists, names: Sequence[str], metric: str, keep_self_hits: bool) -> dict[str, float]:
    out = {}
    for name, per_query in zip(names, data.lists, strict=True):
        run = {qid: {hit.doc_id: hit.score for hit in per_query.get(qid, [])[: EVAL_DEPTH + 1]} for qid in data.queries}
        if not keep_self_hits:
            run = drop_self_hits(run)
        out[name] = evaluate(run, data.qrels, data.dataset.default_rel_threshold).aggregate[metric]
    return out


def _shipped_value(data: SplitLists, pipeline: Pipeline, metric: str, keep_self_hits: bool) -> float:
    """The pipeline as it ships (its own fusion, or its one retriever) on a split's cached lists."""
    if pipeline.fusion is None:
        return next(iter(_single_values(data, pipeline.retriever_names, metric, keep_self_hits).values()))
    shipped = [tuple(pipeline.fusion.weight_vector(pipeline.retriever_names))]
    return float(grid_values(data, [pipeline.fusion], shipped, metric, keep_self_hits)[0, 0])


def leave_one_out(
    targets: list[tuple[Pipeline, Dataset]],
    metric: str = "ndcg@10",
    step: float = 0.1,
    rrf_ks: tuple[float, ...] = (5.0, 10.0, 30.0, 60.0, 100.0),
    tolerance: float = 0.005,
    keep_self_hits: bool = False,
    baselines: list[Pipeline] | None = None,
    anchor: PipelineSpec | None = None,
    anchor_step: float = ANCHOR_STEP,
) -> LocoResult:
    """Run the LOCO protocol over ``targets`` (the same pipeline opened on each collection); ``baselines``, one
    pipeline per target opened on the same collection, adds the bound of staying within ``tolerance`` of it.

    ``anchor`` instead names a baseline held inside the targets' pipeline (its retrievers first, as
    :func:`~braid.pipelines.anchored_fusion.anchored_pipeline` builds it): the baseline is then read off the same
    lists (its weights are one setting), and the anchored families join, their settings in steps of ``anchor_step``.
    """
    if len(targets) < 2:
        raise BraidError("leave-one-collection-out needs two or more datasets")
    if baselines is not None and len(baselines) != len(targets):
        raise BraidError(f"one baseline per collection: {len(baselines)} for {len(targets)}")
    if baselines is not None and anchor is not None:
        raise BraidError("a baseline runs beside the pipeline (baselines) or is held inside it (anchor), not both")
    pipeline = targets[0][0]
    names = pipeline.retriever_names
    if len(names) < 2:
        raise BraidError(f"pipeline {pipeline.name!r} has one retriever: there is no fusion to choose")
    if 60.0 not in rrf_ks:
        rrf_ks = (*rrf_ks, 60.0)  # naive RRF is read from the same grid
    grid = simplex_grid(len(names), step)
    settings = fusion_settings(SEARCHED_METHODS, SEARCHED_NORMALIZATIONS, rrf_ks)
    families = {name: doc for name, (doc, _) in FAMILIES.items()}
    allowed: dict[str, Choice] = {name: rule for name, (_, rule) in FAMILIES.items()}
    anchor_at = None  # (setting, weights) index of the baseline inside the grid
    if anchor is not None:
        own = [spec.name for spec in anchor.retrievers]
        if anchor.fusion is None or anchor.fusion.method != "weighted":
            raise BraidError(f"the anchor {anchor.name!r} must fuse by a weighted sum (method = 'weighted')")
        if names[: len(own)] != own or len(names) == len(own):
            raise BraidError(
                f"pipeline {pipeline.name!r} must hold the anchor {anchor.name!r}'s retrievers ({', '.join(own)})"
                " first and at least one more (braid.pipelines.anchored_fusion.anchored_pipeline builds it)"
            )
        anchored = anchored_grid(tuple(anchor.fusion.weight_vector(own)), len(names) - len(own), anchor_step)
        grid = list(dict.fromkeys([*anchored, *grid]))  # the baseline first: it wins every tie
        own_setting = FusionSpec("weighted", normalization=anchor.fusion.normalization)
        if own_setting not in settings:
            settings.insert(0, own_setting)
        anchor_at = (settings.index(own_setting), 0)
        members = set(anchored)
        for name, doc in ANCHORED_FAMILIES.items():
            families[name] = doc
            allowed[name] = lambda s, w: s == own_setting and w in members
    equal = tuple(round(1 / len(names), 10) for _ in names)
    if equal not in grid:
        grid.append(equal)  # equal weights (naive RRF's) even where the step cannot express 1/n
    collections = []
    for position, (target, dataset) in enumerate(targets):
        tune = split_lists(target, dataset, tuning_split(dataset))
        test = tune if tune.split == "test" else split_lists(target, dataset, "test")
        progress = tqdm(
            total=len(settings) * len(grid) * (1 if test is tune else 2),
            desc=f"loco {dataset.name}",
            unit="setting",
            file=sys.stderr,
        )
        tune_values = grid_values(tune, settings, grid, metric, keep_self_hits, progress)
        test_values = (
            tune_values if test is tune else grid_values(test, settings, grid, metric, keep_self_hits, progress)
        )
        progress.close()
        singles = _single_values(test, names, metric, keep_self_hits)
        tune_singles = singles if test is tune else _single_values(tune, names, metric, keep_self_hits)
        naive_index = (settings.index(NAIVE_RRF), grid.index(equal))
        floor = max(float(tune_values[naive_index]), max(tune_singles.values()) - tolerance)
        baseline = tune_baseline = None
        if baselines is not None:
            other = baselines[position]
            tune_base = split_lists(other, dataset, tune.split)
            test_base = tune_base if test is tune else split_lists(other, dataset, "test")
            baseline = _shipped_value(test_base, other, metric, keep_self_hits)
            tune_baseline = _shipped_value(tune_base, other, metric, keep_self_hits)
        elif anchor_at is not None:
            baseline, tune_baseline = float(test_values[anchor_at]), float(tune_values[anchor_at])
        if tune_baseline is not None:
            floor = max(floor, tune_baseline - tolerance)
        collections.append(Collection(dataset.name, tune, test, tune_values, test_values, singles, floor, baseline))
    naive = {c.name: float(c.test_values[naive_index]) for c in collections}
    current = {
        c.name: _shipped_value(c.test, target, metric, keep_self_hits)
        for (target, _), c in zip(targets, collections, strict=True)
    }
    masks = {
        family: np.array([[rule(s, w) for w in grid] for s in settings], dtype=bool) for family, rule in allowed.items()
    }

    baseline_only = np.zeros((len(settings), len(grid)), dtype=bool)
    if anchor_at is not None:
        baseline_only[anchor_at] = True

    def best(values: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
        # First maximum in (setting, weights) order, as `braid tune`'s stable sort picks it.
        flat = int(np.argmax(np.where(mask, values, -np.inf)))
        return divmod(flat, len(grid))

    def narrowest(mask: np.ndarray, margins: np.ndarray) -> np.ndarray:
        """The settings of ``mask`` whose margin is the largest there."""
        margins = np.where(mask, margins, -np.inf)
        return mask & (margins >= margins.max() - 1e-12)

    def choose(family: str, tuning: list[Collection]) -> tuple[tuple[int, int], float]:
        """The family's setting on these tuning collections, and its mean there."""
        mean = sum(c.tune_values for c in tuning) / len(tuning)
        mask = masks[family]
        if family in WORST_CASE:
            mask = narrowest(mask, np.min([c.tune_values - c.floor for c in tuning], axis=0))
        elif family in ANCHORED_FAMILIES and family != "anchored":
            smallest = np.min([c.tune_values - c.tune_values[anchor_at] for c in tuning], axis=0)
            if family == "min-gain":
                mask = narrowest(mask, smallest)
            else:
                margin = tolerance if family == "clear-gain" else 0.0
                gaining = mask & (smallest >= margin - 1e-12)
                mask = gaining if gaining.any() else baseline_only
        index = best(mean, mask)
        return index, float(mean[index])

    def fusion_at(index: tuple[int, int]) -> FusionSpec:
        return replace(settings[index[0]], weights=dict(zip(names, grid[index[1]], strict=True)))

    folds = []
    for left in collections:
        others = [c for c in collections if c is not left]
        fold = Fold(left.test.label, [c.tune.label for c in others])
        for family, mask in masks.items():
            index, tuning = choose(family, others)
            oracle = best(left.test_values, mask)
            fold.chosen[family] = {
                "fusion": fusion_at(index).to_dict(),
                "tuning": round(tuning, 6),
                "test": round(float(left.test_values[index]), 6),
                "oracle": round(float(left.test_values[oracle]), 6),  # best in hindsight on the test split itself
            }
        folds.append(fold)
    defaults = {}
    for family in masks:
        index, value = choose(family, collections)
        provenance = {
            "datasets": [c.tune.label for c in collections],
            "metric": metric,
            "value": round(value, 6),
            "queries": sum(len(c.tune.queries) for c in collections),
            "step": step,
            "protocol": f"leave-one-collection-out, family {family}",
        }
        if anchor_at is not None:
            provenance.update(anchor=anchor.name, anchor_step=anchor_step)
            provenance["smallest_gain"] = round(
                min(float(c.tune_values[index] - c.tune_values[anchor_at]) for c in collections), 6
            )
        defaults[family] = TunedFusion(fusion_at(index), provenance)
    baseline_name = anchor.name if anchor is not None else None if baselines is None else baselines[0].name
    return LocoResult(
        metric,
        list(names),
        collections,
        folds,
        current,
        naive,
        defaults,
        tolerance,
        baseline_name,
        families,
        anchor is not None,
    )


def format_loco(result: LocoResult) -> str:
    """The LOCO table: per left-out collection, each single retriever, naive RRF, the pipeline's fusion as
    shipped, and each family's choice made without that collection."""
    families = list(result.families)
    baseline = [] if result.baseline is None else [result.baseline]
    header = ["left out (test)", *result.names, "rrf-60", *baseline, "shipped", *families]
    rows = []
    for c, fold in zip(result.collections, result.folds, strict=True):
        cells = [c.test.label, *(f"{c.singles[n]:.4f}" for n in result.names)]
        cells += [f"{result.naive_rrf[c.name]:.4f}"] + [f"{c.baseline:.4f}" for _ in baseline]
        cells += [f"{result.current[c.name]:.4f}"]
        cells += [f"{fold.chosen[f]['test']:.4f}" for f in families]
        rows.append(cells)
    means = ["mean", *(f"{np.mean([c.singles[n] for c in result.collections]):.4f}" for n in result.names)]
    means += [f"{np.mean(list(result.naive_rrf.values())):.4f}"]
    means += [f"{np.mean([c.baseline for c in result.collections]):.4f}" for _ in baseline]
    means += [f"{np.mean(list(result.current.values())):.4f}"]
    means += [f"{np.mean([fold.chosen[f]['test'] for fold in result.folds]):.4f}" for f in families]
    rows.append(means)
    meets = ["meets"] + [""] * (len(result.names) + 2 + len(baseline))
    meets += [f"{sum(result.meets(f).values())}/{len(result.folds)}" for f in families]
    rows.append(meets)
    if result.baseline is not None:
        near = [f"near {result.baseline}"] + [""] * (len(result.names) + 3)
        rows.append(near + [f"{sum(result.near_baseline(f).values())}/{len(result.folds)}" for f in families])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        f"{result.metric}, leave-one-collection-out: each family's fusion chosen on the other collections' tuning"
        " splits, scored on the left-out test split",
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
    ]
    for row in rows:
        lines.append(
            "  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths, strict=True)))
        )
    against = "the best single retriever" + ("" if result.baseline is None else f" and of {result.baseline}")
    lines.append(
        f"meets: left-out collections where the family is within {result.tolerance} of {against}"
        " and not below rrf-60; shipped: the pipeline's [fusion] as it stands (tuned on some of these collections)"
        + ("" if result.baseline is None else f"; near {result.baseline}: within {result.tolerance} of it alone")
    )
    lines.append("")
    lines.append("fitted on every collection's tuning split:")
    for family, tuned in result.defaults.items():
        f = tuned.fusion
        setting = f"k={f.k:g}" if f.method == "rrf" else f.normalization
        weights = ", ".join(f"{n} {w:g}" for n, w in (f.weights or {}).items())
        lines.append(
            f"  {family:<10} {f.method} {setting} ({weights}): mean {result.metric} {tuned.tuned['value']:.4f}"
        )
    return "\n".join(lines)
