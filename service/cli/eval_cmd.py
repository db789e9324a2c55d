"""``braid eval``: run pipelines (or score run files) on a dataset's judged queries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.common.metrics import evaluate
from braid.common.trec_run import drop_self_hits, read_run
from braid.eval.report import format_table, save_results
from braid.eval.runner import RunResult, check_qrels, run_pipeline
from braid.eval.significance import compare
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.service.cli.common import add_data_args, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    ev = subparsers.add_parser("eval", help="evaluate pipelines or run files on a dataset")
    ev.add_argument(
        "--dataset", "--collection", dest="dataset", required=True, help="collection or dataset, by name or path"
    )
    ev.add_argument("--pipeline", action="append", help="built-in pipeline name or TOML file (repeatable)")
    ev.add_argument("--run", action="append", help="score an existing TREC run file instead (repeatable)")
    ev.add_argument("--split", default="test", help="qrels split (default: test)")
    ev.add_argument("--depth", type=positive_int, default=1000, help="hits per query in the run (default: 1000)")
    ev.add_argument(
        "--rel-threshold",
        type=positive_int,
        default=None,
        help="lowest grade counted relevant by Recall/MRR/MAP (default: 1; 2 for graded MS MARCO-layout qrels)",
    )
    ev.add_argument("--keep-self-hits", action="store_true", help="count hits whose id equals the query id")
    ev.add_argument("--allow-unknown-qrels", action="store_true", help="warn, not fail, on qrels with unknown ids")
    ev.add_argument("--latency-sample", type=int, default=100, help="queries timed one by one (default: 100)")
    ev.add_argument("--output", default="results", help="folder for JSON and TREC outputs (default: results)")
    ev.add_argument("--no-build", action="store_true", help="fail instead of building a missing index")
    ev.add_argument(
        "--shards",
        type=positive_int,
        default=1,
        help="search the N serving shards a build job wrote (shards = N) in this process, merged (default: 1)",
    )
    ev.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_data_args(ev)
    ev.set_defaults(handler=run)


def _score_run_file(path: Path, dataset, args: argparse.Namespace) -> RunResult:
    run = read_run(path)
    if not args.keep_self_hits:
        run = drop_self_hits(run)
    threshold = dataset.default_rel_threshold if args.rel_threshold is None else args.rel_threshold
    return RunResult(
        name=path.stem,
        dataset=dataset.name,
        split=args.split,
        evaluation=evaluate(run, dataset.known_qrels(args.split), threshold),
        run=run,
    )


def run(args: argparse.Namespace) -> int:
    if not args.pipeline and not args.run:
        raise BraidError("give --pipeline NAME_OR_FILE (repeatable) or --run FILE to score")
    if args.latency_sample < 0:
        raise BraidError("--latency-sample must be >= 0")
    for run_file in args.run or []:
        if not Path(run_file).is_file():
            raise BraidError(f"run file {run_file} does not exist")
    specs = [load_pipeline(name) for name in args.pipeline or []]
    dataset = resolve_dataset(args.dataset, args.data_dir)
    for warning in check_qrels(dataset, args.split, args.allow_unknown_qrels):
        print(f"warning: {warning}", file=sys.stderr)
    results = []
    for spec in specs:
        pipeline = open_pipeline(
            spec, dataset, Path(args.index_dir), args.threads, build_missing=not args.no_build, shards=args.shards
        )
        results.append(
            run_pipeline(
                pipeline,
                dataset,
                args.split,
                depth=args.depth,
                keep_self_hits=args.keep_self_hits,
                latency_sample=args.latency_sample,
                rel_threshold=args.rel_threshold,
            )
        )
    results += [_score_run_file(Path(path), dataset, args) for path in args.run or []]
    for result in results[1:]:
        result.significance = compare(results[0].evaluation, result.evaluation)
    written = save_results(results, Path(args.output))
    if args.json:
        rows = [result.to_json() for result in results]
        print(json.dumps(rows[0] if len(rows) == 1 else {"dataset": dataset.name, "results": rows}))
    else:
        print(format_table(results))
        print(f"saved {len(written)} files under {Path(args.output) / dataset.name}", file=sys.stderr)
    return 0
