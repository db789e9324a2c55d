"""``braid train ranker``: fine-tune the in-context LLM ranker with BlockRank's objective on judged queries, or
(``--head``) fit a score head over the frozen LM's attention features for ``[rerank] mode = "learned"``."""

from __future__ import annotations

import argparse
from contextlib import closing
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.common.errors import BraidError
from braid.pipelines.pipeline import load_pipeline, open_pipeline
from braid.service.cli.common import add_data_args, pair_splits, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="fine-tune a model (ranker: the in-context LLM reranker)")
    what = train.add_subparsers(dest="what", required=True, metavar="{ranker}")
    ranker = what.add_parser(
        "ranker", help="BlockRank fine-tuning (LM loss + contrastive attention loss), or --head: a learned score head"
    )
    ranker.add_argument("--dataset", required=True, action="append", help="dataset path or name (repeatable)")
    ranker.add_argument(
        "--split", action="append", help="qrels split to train on (default: train); one for all or one per --dataset"
    )
    ranker.add_argument(
        "--output", required=True, help="run folder: checkpoints, final/, training.json (--head: head.json, windows/)"
    )
    ranker.add_argument(
        "--head",
        action="store_true",
        help="fit a linear score head over the frozen LM's calibrated attention (forward passes only; CPU-friendly)",
    )
    ranker.add_argument("--max-queries", type=positive_int, default=100, help="--head: judged queries per source")
    ranker.add_argument(
        "--head-layers", type=positive_int, default=16, help="--head: attention features of layers 0..N-1 (default: 16)"
    )
    ranker.add_argument(
        "--head-features",
        default="likelihood",
        help="--head: comma-separated, of attention, calibrated, first, length, likelihood (default: likelihood)",
    )
    ranker.add_argument("--folds", type=positive_int, default=5, help="--head: cross-validation folds (default: 5)")
    ranker.add_argument("--model", default="smollm2", help="base LM: embedded name, GGUF file, folder or Hub name")
    ranker.add_argument(
        "--negatives-pipeline", default="bm25", help="first stage that mines hard negatives (--head: the windows)"
    )
    ranker.add_argument("--negatives-depth", type=positive_int, default=50, help="its depth (default: 50)")
    ranker.add_argument("--window", type=int, default=20, help="documents per training prompt (default: 20)")
    ranker.add_argument("--max-positives", type=positive_int, default=1, help="relevant documents per prompt")
    ranker.add_argument("--max-doc-tokens", type=positive_int, default=None, help="default: 160 (--head: 128)")
    ranker.add_argument("--max-query-tokens", type=positive_int, default=64)
    ranker.add_argument("--steps", type=positive_int, default=300)
    ranker.add_argument("--batch-size", type=positive_int, default=4, help="prompts per optimizer step")
    ranker.add_argument("--lr", type=float, default=1e-5)
    ranker.add_argument("--warmup", type=float, default=0.1, help="fraction of steps with linear warm-up")
    ranker.add_argument("--weight-decay", type=float, default=0.0)
    ranker.add_argument("--aux-weight", type=float, default=0.1, help="weight of the attention loss (BlockRank: 0.1)")
    ranker.add_argument("--temperature", type=float, default=0.05, help="InfoNCE temperature (BlockRank: 0.05)")
    ranker.add_argument("--score-layer", type=int, default=None, help="attention scoring layer (default: middle)")
    ranker.add_argument("--probe-tokens", type=positive_int, default=8, help="query-block tokens read for scoring")
    ranker.add_argument("--seed", type=int, default=0)
    ranker.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="autocast precision")
    ranker.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ranker.add_argument("--no-gradient-checkpointing", action="store_true", help="keep activations (more memory)")
    ranker.add_argument("--save-every", type=positive_int, default=100, help="checkpoint every N steps")
    add_data_args(ranker)
    ranker.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.head:
        return run_head(args)
    if args.max_doc_tokens is None:
        args.max_doc_tokens = 160
    from braid.ranker.train_examples import load_examples
    from braid.ranker.trainer import RankerTrainer, TrainConfig, check_run_folder

    config = TrainConfig(
        model=args.model,
        window=args.window,
        max_positives=args.max_positives,
        max_doc_tokens=args.max_doc_tokens,
        max_query_tokens=args.max_query_tokens,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        aux_weight=args.aux_weight,
        temperature=args.temperature,
        score_layer=args.score_layer,
        probe_tokens=args.probe_tokens,
        seed=args.seed,
        dtype=args.dtype,
        device=args.device,
        gradient_checkpointing=not args.no_gradient_checkpointing,
        save_every=args.save_every,
    )
    splits = pair_splits(args.dataset, args.split)
    output = Path(args.output)
    check_run_folder(output, config)  # before any index is built or example mined
    datasets = [resolve_dataset(name, args.data_dir) for name in args.dataset]
    negatives = load_pipeline(args.negatives_pipeline)
    if negatives.rerank is not None:
        raise BraidError(f"--negatives-pipeline {args.negatives_pipeline!r} reranks; mine negatives with a first stage")
    examples = load_examples(
        list(zip(datasets, splits, strict=True)),
        lambda dataset: closing(open_pipeline(negatives, dataset, Path(args.index_dir), args.threads)),
        args.negatives_depth,
    )
    trainer = RankerTrainer(config, output, examples)
    summary = trainer.train()
    history = summary["history"]
    tenth = max(1, len(history) // 10)
    first = sum(entry["loss"] for entry in history[:tenth]) / tenth
    last = sum(entry["loss"] for entry in history[-tenth:]) / tenth
    rows = [
        ("examples", f"{summary['examples']} ({', '.join(summary['sources'])})"),
        ("steps", f"{len(history)} x {config.batch_size} prompts of {config.window} documents"),
        ("loss, first/last 10% of steps", f"{first:.4f} -> {last:.4f}"),
        ("scoring layer", str(summary["score_layer"])),
        ("wall", f"{summary['wall_s']:.1f} s on {summary['device']}"),
        ("model", summary["final"]),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f'use it: [rerank] model = "{summary["final"]}", layers = [{summary["score_layer"]}]')
    return 0


def run_head(args: argparse.Namespace) -> int:
    import shlex
    import sys
    import time

    from braid.common.metrics import NdcgJudge
    from braid.ranker.head_training import (
        HEAD_FILE,
        HeadConfig,
        collect_windows,
        config_dict,
        fit_score_head,
        source_name,
        window_cache,
    )
    from braid.ranker.rerank_spec import RerankSpec
    from braid.ranker.reranker import BlockRanker

    started = time.monotonic()
    config = HeadConfig(
        model=args.model,
        window=args.window,
        max_doc_tokens=args.max_doc_tokens or 128,
        max_query_tokens=args.max_query_tokens,
        features=tuple(name.strip() for name in args.head_features.split(",") if name.strip()),
        layers=tuple(range(args.head_layers)),
        probe_tokens=args.probe_tokens,
        max_queries=args.max_queries,
        folds=args.folds,
        seed=args.seed,
        device=args.device,
    )
    splits = pair_splits(args.dataset, args.split)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise BraidError(f"--output {output} exists and is not a folder")
    datasets = [resolve_dataset(name, args.data_dir) for name in args.dataset]
    for dataset, split in zip(datasets, splits, strict=True):
        dataset.qrels(split)  # a missing split fails (naming the available ones) before the model loads
    first_stage = load_pipeline(args.negatives_pipeline)
    if first_stage.rerank is not None:
        raise BraidError(f"--negatives-pipeline {args.negatives_pipeline!r} reranks; give a first stage")
    reads_attention = bool({"attention", "calibrated"} & set(config.features))
    spec = RerankSpec(
        model=config.model,
        mode="attention",
        depth=config.window,
        window=config.window,
        stride=config.window - 1,
        layers=config.layers if reads_attention else (),
        probe_tokens=config.probe_tokens,
        max_doc_tokens=config.max_doc_tokens,
        max_query_tokens=config.max_query_tokens,
        device=config.device,
    )
    ranker = BlockRanker(spec)  # refuses layers the model does not have
    layout = config.layout(ranker.lm.model.config.num_attention_heads)

    def features(query: str, texts: list[str]):
        return ranker.window_features([(query, texts)], layout)[0]

    windows, judges = [], {}
    for dataset, split in zip(datasets, splits, strict=True):
        source = source_name(dataset, split)
        cache = window_cache(output, dataset, split, args.negatives_pipeline, config)
        windows += collect_windows(
            dataset,
            split,
            lambda d: closing(open_pipeline(first_stage, d, Path(args.index_dir), args.threads)),
            features,
            config,
            cache,
        )
        judges[source] = NdcgJudge(dataset.known_qrels(split))
    head, report = fit_score_head(windows, layout, config, judges)
    head.provenance = {
        "command": "braid " + " ".join(shlex.quote(arg) for arg in sys.argv[1:]),
        "data": [source_name(d, s) for d, s in zip(datasets, splits, strict=True)],
        "first_stage": args.negatives_pipeline,
        "seed": config.seed,
        "config": config_dict(config),
        "metrics": report,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    head.save(output / HEAD_FILE)
    cv = report["cv_ndcg@10"]
    rows = [
        ("windows", ", ".join(f"{source}: {n}" for source, n in report["windows"].items())),
        ("features", f"{layout.size}: {', '.join(config.features)}"),
        ("chosen", f"l2 = {report['chosen']['l2']:g}, fusion_weight = {report['chosen']['fusion_weight']:g}"),
        ("CV nDCG@10 of the windows", f"first stage {cv['first_stage']:.4f}, reranked {cv['head']:.4f}"),
        *(
            (f"  {source}", f"first stage {values['first_stage']:.4f}, reranked {values['head']:.4f}")
            for source, values in cv["per_source"].items()
        ),
        ("wall", f"{head.provenance['wall_seconds']:.0f} s"),
        ("head", str(output / HEAD_FILE)),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f'use it: [rerank] mode = "learned", head = "{output / HEAD_FILE}", max_doc_tokens = {config.max_doc_tokens}')
    return 0
