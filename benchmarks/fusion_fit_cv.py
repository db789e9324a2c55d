"""Grid-searched against logistic-fitted fusion weights, cross-validated over the same folds of one tuning split.

``braid tune`` picks weights on a train split; the test split then says how they do, once, with its noise. This
benchmark asks the question on the train split alone: each query is held out once (k folds, dealt as
``braid tune --fit logistic`` deals them), every method chooses its fusion on the other folds, and the held-out
queries score it. Rows: the grid search at each ``--steps`` (every method, normalization and RRF k that ``braid tune``
tries by default) and the logistic fit (its own inner choice of penalty and normalization is cross-validated on the
same folds, as ``braid tune --fit logistic`` reports it). Usage:

    python -m benchmarks.fusion_fit_cv --dataset scifact --split train --pipeline hybrid-max --steps 0.1 0.05

With ``--loco`` and several ``--dataset``, the logistic fit is instead scored leave-one-collection-out, as
``braid tune --loco`` scores the grid-searched families: for each collection, fitted on the others' tuning splits
(train, else dev, else judged queries), each split weighing the same, and scored on its test split:

    python -m benchmarks.fusion_fit_cv --loco --pipeline hybrid --dataset scifact --dataset nfcorpus-orig ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.pipelines.loco import tuning_split
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.pipelines.tuning import (
    RRF_KS,
    WEIGHTED_NORMALIZATIONS,
    check_tuning,
    fusion_settings,
    grid_trials,
    grid_values,
    split_lists,
)
from braid.pipelines.weight_fit import FOLDS, deal, fit_fusion, held_out_shares, subset
from braid.retriever.fusion import METHODS


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", help="default: scifact; repeat with --loco")
    parser.add_argument("--loco", action="store_true", help="leave-one-collection-out over the --datasets")
    parser.add_argument("--split", default="train")
    parser.add_argument("--pipeline", default="hybrid-max")
    parser.add_argument("--steps", nargs="*", type=float, default=[0.1], help="grid steps (none: the fit alone)")
    parser.add_argument("--folds", type=int, default=FOLDS)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--index-dir", default="indexes")
    parser.add_argument("--data-dir")
    parser.add_argument("--output", default="results/fusion_fit_cv.json")
    args = parser.parse_args(argv)
    args.dataset = args.dataset or ["scifact"]
    if args.loco:
        return loco(args)
    spec = load_pipeline(args.pipeline)
    grids = {
        step: check_tuning(spec, [args.split], args.metric, step, METHODS, WEIGHTED_NORMALIZATIONS)
        for step in args.steps
    }
    dataset = resolve_dataset(args.dataset[0], args.data_dir)
    pipeline = open_pipeline(spec, dataset, Path(args.index_dir))
    names = pipeline.retriever_names
    cached = [split_lists(pipeline, dataset, args.split)]
    dealt = deal(cached, args.folds)
    rows = []
    settings = fusion_settings(METHODS, WEIGHTED_NORMALIZATIONS, RRF_KS)
    for step, grid in grids.items():
        value, chosen = np.zeros(len(cached)), []
        for fold in tqdm(range(args.folds), desc=f"grid {step:g}", unit="fold", file=sys.stderr):
            rest = [
                subset(data, [q for f, part in enumerate(parts) if f != fold for q in part])
                for data, parts in zip(cached, dealt, strict=True)
            ]
            fusion = grid_trials(rest, names, settings, grid, args.metric)[0].fusion
            chosen.append(fusion.to_dict())
            value += held_out_shares(cached, dealt, fold, fusion, names, args.metric)
        rows.append({"method": f"grid step {step:g}", "cross_validated": float(value.mean()), "per_fold": chosen})
    best, penalty = fit_fusion(cached, names, args.metric, WEIGHTED_NORMALIZATIONS, folds=args.folds)[0]
    rows.append(
        {"method": "logistic", "cross_validated": best.value, "penalty": penalty, "fitted": best.fusion.to_dict()}
    )
    report = {
        "dataset": dataset.name,
        "split": args.split,
        "pipeline": spec.name,
        "metric": args.metric,
        "folds": args.folds,
        "queries": len(cached[0].queries),
        "rows": rows,
    }
    where = f"{dataset.name}/{args.split} ({report['queries']} queries)"
    print(f"{spec.name} on {where}, {args.folds}-fold cross-validated")
    print(f"{'method':<16} {args.metric:>8}")
    for row in rows:
        print(f"{row['method']:<16} {row['cross_validated']:8.4f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.output), json.dumps(report, indent=1) + "\n")
    print(f"saved {args.output}")
    return report


def loco(args: argparse.Namespace) -> dict:
    """The logistic fit, leave-one-collection-out: fitted on the other collections, scored on the left-out test."""
    spec = load_pipeline(args.pipeline)
    datasets = [resolve_dataset(name, args.data_dir) for name in args.dataset]
    pipelines = [open_pipeline(spec, dataset, Path(args.index_dir)) for dataset in datasets]
    names = pipelines[0].retriever_names
    tune = [split_lists(p, d, tuning_split(d)) for p, d in zip(pipelines, datasets, strict=True)]
    rows = []
    for i, (pipeline, dataset) in enumerate(zip(pipelines, datasets, strict=True)):
        others = [data for j, data in enumerate(tune) if j != i]
        best, penalty = fit_fusion(others, names, args.metric, WEIGHTED_NORMALIZATIONS, folds=args.folds)[0]
        test = tune[i] if tune[i].split == "test" else split_lists(pipeline, dataset, "test")
        value = grid_values(test, [best.fusion], [tuple(best.fusion.weight_vector(names))], args.metric)[0, 0]
        rows.append(
            {
                "left_out": test.label,
                "tuned_on": [data.label for data in others],
                "fusion": best.fusion.to_dict(),
                "penalty": penalty,
                "cross_validated": best.value,
                "test": float(value),
            }
        )
    report = {"pipeline": spec.name, "metric": args.metric, "protocol": "leave-one-collection-out", "rows": rows}
    print(f"{spec.name}: logistic fit, leave-one-collection-out, {args.metric} on each left-out test split")
    for row in rows:
        print(f"{row['left_out']:<40} {row['test']:8.4f}")
    print(f"{'mean':<40} {np.mean([row['test'] for row in rows]):8.4f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.output), json.dumps(report, indent=1) + "\n")
    print(f"saved {args.output}")
    return report


if __name__ == "__main__":
    main()
