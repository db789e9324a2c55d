"""Fusion tuned from a baseline outward: the baseline pipeline held inside a larger one, its weights scaled.

Tuning a richer pipeline's weights from scratch (say hybrid-max's MaxSim and 512-token views) searches settings that
need not contain what already works: hybrid-max's own retrievers cannot express the hybrid, whose dense and SPLADE
read 256 tokens. Anchoring removes that gap. The tuned pipeline holds the baseline's retrievers first, exactly as
the baseline runs them, then the target's others (:func:`anchored_pipeline`), and the settings searched start from
the baseline: its weights times alpha, the rest 1 - alpha spread over the added retrievers (:func:`anchored_grid`),
so alpha = 1 is the baseline itself. A choice rule over those settings can then refuse to move off the baseline
unless the tuning collections agree that something helps, in the spirit of safe policy improvement (Thomas et al.,
"High Confidence Policy Improvement", ICML 2015; here without its confidence bounds, one value per collection): a
new setting replaces the baseline only if it is no worse on every tuning collection (``no-loss``), or the one with
the largest smallest gain over it (``min-gain``); see :mod:`braid.pipelines.loco`.
"""

from __future__ import annotations

from dataclasses import replace

from braid.common.errors import BraidError
from braid.pipelines.spec import PipelineSpec, counted_retrievers, feeders
from braid.pipelines.tuning import simplex_grid


def anchored_pipeline(baseline: PipelineSpec, target: PipelineSpec) -> PipelineSpec:
    """The baseline's retrievers, then the target's that the baseline lacks (renamed ``<target>.<name>`` on a name
    clash), fused as the baseline fuses, the added retrievers at weight 0: as it comes, it ranks as the baseline."""
    if baseline.fusion is None or baseline.fusion.method != "weighted":
        raise BraidError(f"the baseline {baseline.name!r} must fuse by a weighted sum to anchor on")
    if baseline.cascade:
        # The anchored pipeline tunes one fusion of first-stage lists; a cascade after it would not be held.
        raise BraidError(f"the baseline {baseline.name!r} has a [[cascade]]: anchoring holds first-stage fusions only")
    taken = {spec.name for spec in baseline.retrievers}
    renamed: dict[str, str] = {}  # the target's name of each of its retrievers -> its name in the anchored pipeline
    added = []
    for spec in target.retrievers:
        # The same list whatever its name: every other field of the spec (kind, parameters, depth, index folder,
        # scores_top, candidates) equal.
        same = next((own for own in baseline.retrievers if replace(spec, name=own.name) == own), None)
        if same is not None:
            renamed[spec.name] = same.name
            continue
        name = spec.name if spec.name not in taken else f"{target.name}.{spec.name}"
        taken.add(name)
        renamed[spec.name] = name
        added.append(replace(spec, name=name))
    # A rescoring retriever keeps scoring the candidates it scored in the target, not the baseline's lists too.
    added = [
        replace(spec, candidates_from=tuple(renamed[n] for n in feeders(spec, target.retrievers)))
        if spec.scores_top
        else spec
        for spec in added
    ]
    if not added:
        raise BraidError(f"{target.name!r} adds no retriever to {baseline.name!r}: there is nothing to anchor")
    retrievers = (*baseline.retrievers, *added)
    own = [spec.name for spec in baseline.retrievers]
    weights = dict(zip(own, baseline.fusion.weight_vector(own).tolist(), strict=True))
    weights.update({spec.name: 0.0 for spec in added})
    description = f"{baseline.name} with {target.name}'s other retrievers, anchored on {baseline.name}'s fusion"
    return PipelineSpec(
        f"{baseline.name}+{target.name}", retrievers, replace(baseline.fusion, weights=weights), description=description
    )


def anchored_grid(base: tuple[float, ...], added: int, step: float) -> list[tuple[float, ...]]:
    """alpha x ``base`` (normalized to sum 1), then 1 - alpha spread over ``added`` retrievers, alpha and the spread
    in multiples of ``step``; the baseline itself (alpha = 1) first, so that it wins every tie."""
    total = sum(base)
    if not total > 0 or min(base) < 0:
        raise BraidError(f"the baseline's weights must be >= 0 with a positive sum, got {base}")
    grid = []
    # A simplex over (the baseline as one retriever, the added ones): alpha is the first coordinate.
    for alpha, *spread in sorted(simplex_grid(added + 1, step, "--anchor-step"), key=lambda weights: -weights[0]):
        grid.append(tuple(round(alpha * w / total, 10) for w in base) + tuple(spread))
    return grid


def drop_unweighted(spec: PipelineSpec) -> PipelineSpec:
    """``spec`` without the retrievers its ``[fusion]`` does not count (weight 0, and not feeding a weighted
    ``scores_top`` retriever: :func:`~braid.pipelines.spec.counted_retrievers`), so that it builds and opens only what
    counts."""
    if spec.per_dataset:
        return spec  # per-collection weights may use any retriever
    kept = counted_retrievers(spec.retrievers, spec.fusion)
    if len(kept) == len(spec.retrievers):
        return spec
    assert spec.fusion is not None  # counted_retrievers keeps every retriever of a pipeline without fusion
    weights = spec.fusion.weight_vector([r.name for r in kept]).tolist()
    fusion = replace(spec.fusion, weights={r.name: weight for r, weight in zip(kept, weights, strict=True)})
    return replace(spec, retrievers=kept, fusion=fusion)
