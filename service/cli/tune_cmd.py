"""``braid tune``: fit a pipeline's fusion weights on a train or dev split and save them into the pipeline file;
with ``--loco``, score fusion families leave-one-collection-out first."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from braid.common.atomic_file import atomic_write_text
from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.pipelines.anchored_fusion import anchored_pipeline, drop_unweighted
from braid.pipelines.loco import (
    ANCHOR_STEP,
    ANCHORED_FAMILIES,
    FAMILIES,
    SEARCHED_METHODS,
    SEARCHED_NORMALIZATIONS,
    format_loco,
    leave_one_out,
)
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.pipelines.spec import TunedFusion, builtin_pipelines, save_pipeline
from braid.pipelines.tuning import (
    RRF_KS,
    STEP,
    TUNABLE_METRICS,
    WEIGHTED_NORMALIZATIONS,
    Trial,
    check_tuning,
    simplex_grid,
    tune_fusion,
    tuned_subset,
    widened,
)
from braid.pipelines.weight_fit import FOLDS, PENALTIES, check_fit, fit_tuned
from braid.retriever.fusion import METHODS, NORMALIZATIONS
from braid.service.cli.common import add_data_args, pair_splits

FITS = ("grid", "logistic")


def register(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser("tune", help="tune a pipeline's fusion weights on a train/dev split")
    tune.add_argument(
        "--dataset", required=True, action="append", help="dataset path or name (repeatable: the mean is maximized)"
    )
    tune.add_argument("--pipeline", required=True, help="pipeline TOML file (or built-in name, with --output)")
    tune.add_argument(
        "--split",
        action="append",
        help="qrels split to tune on (default: train; never test); one for all datasets or one per --dataset",
    )
    tune.add_argument("--metric", default="ndcg@10", choices=TUNABLE_METRICS, help="metric to maximize")
    tune.add_argument(
        "--fit",
        default="grid",
        choices=FITS,
        help="grid: search weights on the simplex (and RRF's k) for the best metric; logistic: fit weighted-fusion"
        " weights by logistic regression on the candidates' relevance, penalty and normalization chosen by"
        " cross-validating the metric over queries",
    )
    tune.add_argument("--step", type=float, help=f"weight grid step on the simplex (default: {STEP})")
    tune.add_argument(
        "--penalties",
        nargs="+",
        type=float,
        default=list(PENALTIES),
        help="with --fit logistic: L2 penalties tried (on the mean log-loss)",
    )
    tune.add_argument("--folds", type=int, default=FOLDS, help="with --fit logistic: cross-validation folds")
    tune.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="fusion methods tried")
    tune.add_argument(
        "--normalizations",
        nargs="+",
        default=list(WEIGHTED_NORMALIZATIONS),
        choices=NORMALIZATIONS,
        help="for weighted",
    )
    ks = " ".join(f"{k:g}" for k in RRF_KS)
    tune.add_argument("--rrf-k", nargs="+", type=float, help=f"k values for RRF (default: {ks})")
    tune.add_argument("--output", help="write the tuned pipeline here (default: overwrite --pipeline's file)")
    tune.add_argument(
        "--per-dataset",
        action="store_true",
        help="save each dataset's best setting as its own [per_dataset.<dataset>] fusion (each tuned on its own split)"
        " instead of one [fusion] for all",
    )
    tune.add_argument(
        "--retrievers",
        nargs="+",
        metavar="NAME",
        help="tune only these retrievers' weights; the pipeline's others get weight 0 in the fusion saved (under a"
        " weighted sum a query then skips them)",
    )
    tune.add_argument("--keep-self-hits", action="store_true", help="count hits whose id equals the query id")
    tune.add_argument("--json", action="store_true", help="print the best setting as JSON")
    tune.add_argument(
        "--loco",
        action="store_true",
        help="leave-one-collection-out: for each --dataset, choose the fusion on the others' tuning splits (train,"
        " else dev, else judged queries) and score it on its test split; prints the table, saves JSON under"
        " --report, and writes --family's fusion fitted on all collections to --output if given",
    )
    tune.add_argument(
        "--family",
        default="joint",
        choices=[*FAMILIES, *ANCHORED_FAMILIES],
        help="with --loco: the family --output receives (anchored, no-loss, min-gain, clear-gain: with --anchor)",
    )
    tune.add_argument("--report", default="results", help="with --loco: folder for loco/<pipeline>.json")
    tune.add_argument("--tolerance", type=float, default=0.005, help="with --loco: allowed gap to the best retriever")
    tune.add_argument(
        "--baseline",
        help="with --loco: a pipeline (built-in name or TOML) each family must also stay within --tolerance of on"
        " every left-out collection, e.g. hybrid when tuning hybrid-max",
    )
    tune.add_argument(
        "--anchor",
        action="store_true",
        help="with --loco and --baseline: tune one pipeline holding the baseline's retrievers and --pipeline's others"
        " (the baseline is one of its settings) and add the families anchored on the baseline's weights:"
        " anchored, no-loss, min-gain, clear-gain; --output then receives that combined pipeline, less the"
        " retrievers at weight 0 (unless --keep-unweighted)",
    )
    tune.add_argument(
        "--keep-unweighted",
        action="store_true",
        help="with --anchor and --output: keep every retriever of the combined pipeline, those at weight 0 too (a"
        " query skips them; a later `braid tune --per-dataset` can weigh them for one collection)",
    )
    tune.add_argument(
        "--anchor-step",
        type=float,
        help=f"with --anchor: step of the baseline's share alpha and of the rest's spread (default: {ANCHOR_STEP})",
    )
    add_data_args(tune)
    tune.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.loco:
        return run_loco(args)
    if args.baseline or args.anchor or args.keep_unweighted:
        option = "--anchor" if args.anchor else "--baseline" if args.baseline else "--keep-unweighted"
        raise BraidError(f"{option} belongs to the leave-one-collection-out protocol: add --loco, or drop it")
    source = Path(args.pipeline)
    if args.output is None and not source.is_file():
        hint = " (a built-in)" if args.pipeline in builtin_pipelines() else ""
        raise BraidError(f"--pipeline {args.pipeline}{hint} is not a file: give --output FILE for the tuned pipeline")
    output = Path(args.output) if args.output else source
    if output.exists() and output.is_dir():
        raise BraidError(f"--output {output} is a directory; give a file path")
    spec = load_pipeline(args.pipeline)
    splits = pair_splits(args.dataset, args.split)
    # Refuse a bad request before resolving data or building any index.
    logistic = args.fit == "logistic"
    if logistic:
        if "weighted" not in args.methods:
            raise BraidError("--fit logistic fits a weighted fusion: --methods must include weighted")
        if args.step is not None or args.rrf_k is not None:
            raise BraidError("--step and --rrf-k set the grid search; --fit logistic has none: drop them")
        check_fit(tuple(args.penalties), args.folds)
    else:
        grid_defaults(args)
    check_tuning(spec, splits, args.metric, args.step, tuple(args.methods), tuple(args.normalizations))
    tuned_spec = spec if args.retrievers is None else tuned_subset(spec, args.retrievers)
    datasets = [resolve_dataset(name, args.data_dir) for name in args.dataset]
    targets = [
        (open_pipeline(tuned_spec, dataset, Path(args.index_dir), args.threads), dataset, split)
        for dataset, split in zip(datasets, splits, strict=True)
    ]
    common = dict(metric=args.metric, normalizations=tuple(args.normalizations), keep_self_hits=args.keep_self_hits)
    if logistic:
        search, options = fit_tuned, dict(common, penalties=tuple(args.penalties), folds=args.folds)
    else:
        search = tune_fusion
        options = dict(common, step=args.step, methods=tuple(args.methods), rrf_ks=tuple(args.rrf_k))
    # Per dataset: one search per (dataset, split), each saved as that collection's own fusion.
    groups = [[target] for target in targets] if args.per_dataset else [targets]
    results = []  # (what it was tuned on, the best setting with its provenance, every trial)
    for group in groups:
        tuned, trials = search(group, **options)
        tuned = tuned if args.retrievers is None else widened(tuned, spec)
        spec = spec.with_fusion(tuned, group[0][1].name if args.per_dataset else None)
        results.append((" + ".join(f"{dataset.name}/{split}" for _, dataset, split in group), tuned, trials))
    where = "[per_dataset.<dataset>] fusion" if args.per_dataset else "[fusion]"
    header = "\n".join(describe(label, tuned, trials, args, where) for label, tuned, trials in results)
    save_pipeline(spec, output, header)
    if args.json:
        rows = [{"fusion": tuned.fusion.to_dict(), **(tuned.tuned or {})} for _, tuned, _ in results]
        print(json.dumps(rows if args.per_dataset else rows[0]))
        return 0
    for label, _, trials in results:
        print(f"{label}:")
        value = f"cv {args.metric}" if logistic else args.metric
        print(f"{'method':<10} {'norm/k':>8}  {'weights':<40} {value:>8}")
        for trial in trials[:10]:
            f = trial.fusion
            setting = f.normalization if f.method == "weighted" else f"k={f.k:g}"
            weights = ", ".join(f"{name} {value:g}" for name, value in (f.weights or {}).items())
            print(f"{f.method:<10} {setting:>8}  {weights:<40} {trial.value:8.4f}")
    print(f"saved the best setting into {output} ({where})")
    return 0


def grid_defaults(args: argparse.Namespace) -> None:
    """Fill in the grid's --step and --rrf-k where not given (left unset so that --fit logistic can refuse them)."""
    args.step = STEP if args.step is None else args.step
    args.rrf_k = list(RRF_KS) if args.rrf_k is None else args.rrf_k


def describe(label: str, tuned: TunedFusion, trials: list[Trial], args: argparse.Namespace, where: str) -> str:
    """The pipeline file's comment on where its fusion came from."""
    if args.retrievers:
        label += f" over {', '.join(args.retrievers)} (the other retrievers at weight 0)"
    if args.fit == "logistic":
        return (
            f"{where} fitted by `braid tune --fit logistic` on {label} ({len(trials)} penalties x normalizations,"
            f" {args.folds}-fold cross-validated {args.metric} {trials[0].value:.4f}):"
            f" {args.metric} {tuned.tuned['value']:.4f}."
        )
    return (
        f"{where} tuned by `braid tune` on {label} ({len(trials)} settings tried): {args.metric} {trials[0].value:.4f}."
    )


def run_loco(args: argparse.Namespace) -> int:
    if args.split:
        raise BraidError(
            "--loco picks each collection's splits itself (train, else dev, else judged queries; test to"
            " score): drop --split"
        )
    if args.per_dataset:
        raise BraidError("--loco chooses one fusion for every collection: drop --per-dataset")
    if args.fit != "grid":
        raise BraidError("--loco compares the grid-searched fusion families: drop --fit")
    if args.retrievers:
        raise BraidError("--loco tunes every retriever of the pipeline: drop --retrievers")
    if len(set(args.dataset)) < 2:
        raise BraidError("--loco needs two or more different --dataset")
    if not 0 <= args.tolerance < 1:
        raise BraidError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    if args.anchor_step is not None and not args.anchor:
        raise BraidError("--anchor-step sets the grid of --anchor: add --anchor, or drop it")
    if args.anchor and not args.baseline:
        raise BraidError("--anchor holds a baseline inside the pipeline tuned: give --baseline (e.g. hybrid)")
    if args.keep_unweighted and not (args.anchor and args.output):
        raise BraidError("--keep-unweighted keeps --anchor's retrievers in --output: add both, or drop it")
    if args.family in ANCHORED_FAMILIES and not args.anchor:
        raise BraidError(f"--family {args.family} is chosen among settings anchored on a baseline: add --anchor")
    baseline = load_pipeline(args.baseline) if args.baseline else None
    output = Path(args.output) if args.output else None
    if output is not None and output.is_dir():
        raise BraidError(f"--output {output} is a directory; give a file path")
    spec = load_pipeline(args.pipeline)
    anchor = None
    if args.anchor:
        args.anchor_step = ANCHOR_STEP if args.anchor_step is None else args.anchor_step
        simplex_grid(2, args.anchor_step, "--anchor-step")  # refused before any retriever runs
        anchor, baseline = baseline, None
        spec = anchored_pipeline(anchor, spec)
    grid_defaults(args)
    check_tuning(spec, [], args.metric, args.step, SEARCHED_METHODS, SEARCHED_NORMALIZATIONS)
    datasets = [resolve_dataset(name, args.data_dir) for name in args.dataset]
    for dataset in datasets:
        if "test" not in dataset.splits:
            raise BraidError(f"--loco scores each left-out collection on its test split; {dataset.name} has none")
    targets = [(open_pipeline(spec, dataset, Path(args.index_dir), args.threads), dataset) for dataset in datasets]
    baselines = None
    if baseline is not None:
        baselines = [open_pipeline(baseline, dataset, Path(args.index_dir), args.threads) for dataset in datasets]
    result = leave_one_out(
        targets,
        metric=args.metric,
        step=args.step,
        rrf_ks=tuple(args.rrf_k),
        tolerance=args.tolerance,
        keep_self_hits=args.keep_self_hits,
        baselines=baselines,
        anchor=anchor,
        anchor_step=args.anchor_step or ANCHOR_STEP,
    )
    report = Path(args.report) / "loco" / f"{spec.name}.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    payload = result.to_json()
    atomic_write_text(report, json.dumps(payload, indent=1) + "\n")
    if args.json:
        print(json.dumps(payload))
    else:
        print(format_loco(result))
        print(f"saved {report}")
    if output is not None:
        tuned = result.defaults[args.family]
        header = (
            f"[fusion] chosen by `braid tune --loco` (family {args.family}: {result.families[args.family]}), fitted on "
            f"{', '.join(tuned.tuned['datasets'])}; left-one-out scores in {report}."
        )
        saved = spec.with_fusion(tuned)
        if anchor is not None and not args.keep_unweighted:  # it holds every retriever of both: keep those that count
            saved = drop_unweighted(saved)
            dropped = sorted({r.name for r in spec.retrievers} - {r.name for r in saved.retrievers})
            header += f" Retrievers at weight 0 left out: {', '.join(dropped)}." if dropped else ""
        save_pipeline(saved, output, header)
        print(f"saved the {args.family} fusion into {output} ([fusion])", file=sys.stderr if args.json else sys.stdout)
    return 0
