"""Run a pipeline over a dataset's judged queries and score the run."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.metrics import Evaluation, evaluate
from braid.common.passages import document_of
from braid.common.trec_run import Run, drop_self_hits
from braid.indexer.query_encodings import forget_query_encodings
from braid.pipelines.pipeline import Pipeline


@dataclass
class RunResult:
    """A scored run with its costs: what ``braid eval`` prints and saves."""

    name: str
    dataset: str
    split: str
    evaluation: Evaluation
    run: Run
    queries_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    index_bytes: int | None = None
    build_docs_per_s: float | None = None
    index_builds: list[dict] = field(default_factory=list)  # per index: kind, documents, seconds, docs/s, peak RSS
    stage_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    significance: dict[str, float] = field(default_factory=dict)  # metric -> p-value against the first pipeline
    fusion: dict[str, Any] | None = None  # the fusion the pipeline ran on this dataset (its own, if tuned for it)

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.name,
            "dataset": self.dataset,
            "split": self.split,
            "queries": self.evaluation.num_queries,
            "rel_threshold": self.evaluation.rel_threshold,
            **{key: round(value, 6) for key, value in self.evaluation.aggregate.items()},
            "queries_per_s": None if self.queries_per_s is None else round(self.queries_per_s, 2),
            "latency_ms_p50": self.latency_ms.get("p50"),
            "latency_ms_p99": self.latency_ms.get("p99"),
            "index_bytes": self.index_bytes,
            "build_docs_per_s": None if self.build_docs_per_s is None else round(self.build_docs_per_s, 2),
            "build_peak_rss_bytes": max((b["peak_rss_bytes"] or 0 for b in self.index_builds), default=0) or None,
            "index_builds": self.index_builds,
            "stage_latency_ms": self.stage_latency_ms,
            "p_values": self.significance,
            "fusion": self.fusion,
        }


def check_qrels(dataset: Dataset, split: str, allow_unknown: bool = False) -> list[str]:
    """Count qrels entries pointing at unknown query or document ids.

    Returns warnings when ``allow_unknown``; otherwise unknown ids are an error, since they usually mean
    qrels and corpus from different versions of a dataset, which silently deflates recall.
    """
    qrels = dataset.qrels(split)
    queries = dataset.queries()
    doc_ids = {doc.doc_id for doc in dataset.iter_corpus()}
    if dataset.passages is not None:  # judgments name documents; the corpus holds their passages
        doc_ids = {document_of(doc_id) for doc_id in doc_ids}
    unknown_queries = sorted(qid for qid in qrels if qid not in queries)
    unknown_docs = sorted({doc for docs in qrels.values() for doc in docs if doc not in doc_ids})
    problems = []
    if unknown_queries:
        problems.append(f"{len(unknown_queries)} unknown query id(s), e.g. {', '.join(unknown_queries[:5])}")
    if unknown_docs:
        problems.append(f"{len(unknown_docs)} unknown document id(s), e.g. {', '.join(unknown_docs[:5])}")
    if problems and not allow_unknown:
        raise BraidError(
            f"qrels/{split} of {dataset.name} point at ids that are not in the dataset: {'; '.join(problems)} "
            "(pass --allow-unknown-qrels to evaluate anyway)"
        )
    return [f"qrels/{split} of {dataset.name}: {problem}" for problem in problems]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def run_pipeline(
    pipeline: Pipeline,
    dataset: Dataset,
    split: str = "test",
    depth: int = 1000,
    keep_self_hits: bool = False,
    latency_sample: int = 100,
    rel_threshold: int | None = None,
) -> RunResult:
    """Batch-search the split's queries, score the run, and time single queries for latency."""
    queries = dataset.judged_queries(split)
    # One extra hit per query so that dropping the query's own id still leaves ``depth`` hits.
    fetch = depth if keep_self_hits else depth + 1
    # Each timing pays its queries' encodings: the process's query cache would otherwise hand a pipeline the
    # encodings an earlier pipeline with the same encoder made (in one process, 30 against 73 q/s on arguana for the
    # hybrid's three lists, run second), and the latency sample those of the batch.
    forget_query_encodings()
    started = time.perf_counter()
    results = pipeline.batch_search(queries, fetch)
    elapsed = time.perf_counter() - started
    run: Run = {qid: {hit.doc_id: hit.score for hit in hits} for qid, hits in results.items()}
    if not keep_self_hits:
        run = drop_self_hits(run)
    run = {qid: dict(sorted(scores.items(), key=lambda item: -item[1])[:depth]) for qid, scores in run.items()}
    latencies: list[float] = []
    stages: dict[str, list[float]] = {}
    sample = list(queries.items())[: max(0, latency_sample)]
    single_k = min(100, pipeline.doc_count)
    forget_query_encodings()
    for _, text in tqdm(sample, desc=f"latency {pipeline.name}", unit="q", file=sys.stderr, leave=False):
        tick = time.perf_counter()
        _, timings = pipeline.search_timed(text, single_k)
        latencies.append((time.perf_counter() - tick) * 1000)
        for stage, ms in timings.items():
            if stage != "total":
                stages.setdefault(stage, []).append(ms)
    threshold = dataset.default_rel_threshold if rel_threshold is None else rel_threshold
    return RunResult(
        name=pipeline.name,
        dataset=dataset.name,
        split=split,
        evaluation=evaluate(run, dataset.known_qrels(split), threshold),
        run=run,
        queries_per_s=len(queries) / elapsed if elapsed > 0 else None,
        latency_ms=_p50_p99(latencies) if latencies else {},
        index_bytes=pipeline.index_bytes(),
        build_docs_per_s=pipeline.build_docs_per_second(),
        index_builds=pipeline.index_builds(),
        stage_latency_ms={stage: _p50_p99(values) for stage, values in stages.items()},
        fusion=_fusion_used(pipeline, split),
    )


def _fusion_used(pipeline: Pipeline, split: str) -> dict[str, Any] | None:
    """The fusion that ran, where its weights were tuned (``collection/split`` labels; empty when nobody tuned
    them) and how (``fit``: ``grid`` search or ``logistic`` regression), and whether the split being scored was
    among those (an in-sample score, not an estimate)."""
    fusion = pipeline.fusion
    if fusion is None:
        return None
    own = pipeline.spec.per_dataset.get(pipeline.dataset)
    tuned = (own.tuned if own is not None else pipeline.spec.tuned) or {}
    tuned_on = list(tuned.get("datasets", []))
    if not tuned_on and "dataset" in tuned:  # the older one-collection form: dataset = ..., split = ...
        tuned_on = [f"{tuned['dataset']}/{tuned.get('split', 'train')}"]
    return {
        **fusion.to_dict(),
        "per_dataset": own is not None,
        "tuned_on": tuned_on,
        "fit": tuned.get("fit", "grid") if tuned_on else None,
        "in_sample": f"{pipeline.dataset}/{split}" in tuned_on,
    }


def _p50_p99(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50), 3), "p99": round(percentile(values, 99), 3)}
