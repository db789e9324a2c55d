"""Print results as a table and save them as JSON and TREC run files."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from braid.common.atomic_file import atomic_write_text
from braid.common.trec_run import write_run
from braid.eval.plot import plot_quality_latency
from braid.eval.runner import RunResult
from braid.eval.significance import ALPHA, TESTED_METRICS

COLUMNS = (
    ("pipeline", "pipeline", "{}"),
    ("ndcg@10", "nDCG@10", "{:.4f}"),
    ("recall@100", "R@100", "{:.4f}"),
    ("recall@1000", "R@1000", "{:.4f}"),
    ("mrr@10", "MRR@10", "{:.4f}"),
    ("map", "MAP", "{:.4f}"),
    ("queries_per_s", "q/s", "{:.1f}"),
    ("latency_ms_p50", "p50 ms", "{:.2f}"),
    ("latency_ms_p99", "p99 ms", "{:.2f}"),
    ("index_bytes", "index MB", "{}"),
    ("build_docs_per_s", "build doc/s", "{:.1f}"),
    ("build_peak_rss_bytes", "build GB", "{}"),
)


def _cell(key: str, fmt: str, row: dict) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "index_bytes":
        return f"{value / 1e6:.1f}"
    if key == "build_peak_rss_bytes":
        return f"{value / 2**30:.2f}"
    text = fmt.format(value)
    if key in TESTED_METRICS and row.get("p_values"):
        text += "*" if row["p_values"][key] < ALPHA else " "
    return text


def format_table(results: Sequence[RunResult]) -> str:
    rows = [result.to_json() for result in results]
    header = [title for _, title, _ in COLUMNS]
    body = [[_cell(key, fmt, row) for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(header[i]), *(len(line[i]) for line in body)) for i in range(len(header))]
    first = rows[0] if rows else {}
    lines = [
        f"dataset {first.get('dataset')} / split {first.get('split')} / {first.get('queries')} queries / "
        f"relevant = grade >= {first.get('rel_threshold')}",
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
    ]
    for line in body:
        lines.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )
    if len(rows) > 1 and any(row.get("p_values") for row in rows):
        lines.append(
            f"* p < {ALPHA} against {rows[0]['pipeline']} (two-sided paired t-test over queries; p-values in the JSON)"
        )
    for row in rows:
        if row.get("fusion"):
            lines.append(_fusion_line(row["pipeline"], row["fusion"]))
    stages = [(row["pipeline"], stage, ms) for row in rows for stage, ms in (row.get("stage_latency_ms") or {}).items()]
    if any(len(row.get("stage_latency_ms") or {}) > 1 for row in rows):
        width = max(len(f"{name}  {stage}") for name, stage, _ in stages)
        lines.append("")
        lines.append(f"{'stage latency (single query)'.ljust(width)}  {'p50 ms':>8}  {'p99 ms':>8}")
        for name, stage, ms in stages:
            lines.append(f"{f'{name}  {stage}'.ljust(width)}  {ms['p50']:>8.2f}  {ms['p99']:>8.2f}")
    return "\n".join(lines)


def _fusion_line(pipeline: str, fusion: dict) -> str:
    setting = f"k={fusion['k']:g}" if fusion["method"] == "rrf" else fusion["normalization"]
    weights = ", ".join(f"{name} {value:g}" for name, value in fusion["weights"].items()) or "equal weights"
    how = "fitted by logistic regression" if fusion.get("fit") == "logistic" else "tuned"
    where = f"{how} on {', '.join(fusion['tuned_on'])}" if fusion["tuned_on"] else "weights as written (not tuned)"
    own = " (this collection's own)" if fusion["per_dataset"] else ""
    warning = "; IN-SAMPLE: this split was tuned on" if fusion["in_sample"] else ""
    return f"fusion of {pipeline}{own}: {fusion['method']} {setting} ({weights}), {where}{warning}"


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def save_results(results: Sequence[RunResult], output_dir: Path) -> list[Path]:
    """Write ``<output>/<dataset>/<pipeline>.json`` (metrics, per-query scores) and ``.trec`` (the run)."""
    written = []
    for result in results:
        folder = Path(output_dir) / _safe_name(result.dataset)
        folder.mkdir(parents=True, exist_ok=True)
        stem = _safe_name(f"{result.name}.{result.split}")
        payload = {**result.to_json(), "per_query": result.evaluation.per_query}
        json_path = folder / f"{stem}.json"
        atomic_write_text(json_path, json.dumps(payload, indent=1, sort_keys=True) + "\n")
        run_path = folder / f"{stem}.trec"
        write_run(run_path, result.run, tag=result.name)
        written += [json_path, run_path]
    if results:
        plot = plot_quality_latency(results, Path(output_dir) / _safe_name(results[0].dataset) / "quality_latency.png")
        if plot is not None:
            written.append(plot)
    return written
