"""Quality against latency, one point per pipeline, saved as a PNG next to the results."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from braid.eval.runner import RunResult


def plot_quality_latency(results: Sequence[RunResult], path: Path, metric: str = "ndcg@10") -> Path | None:
    """Scatter of ``metric`` against single-query p50 latency; None when no result has a latency."""
    points = [(r.name, r.latency_ms["p50"], r.evaluation.aggregate[metric]) for r in results if r.latency_ms]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display here, and none needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for name, latency, quality in points:
        axes.scatter(latency, quality, s=36)
        axes.annotate(name, (latency, quality), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xscale("log")
    axes.margins(x=0.25, y=0.1)  # room for the labels right of the points
    axes.set_xlabel("single-query latency p50 (ms, log scale)")
    axes.set_ylabel(metric)
    first = results[0]
    axes.set_title(f"{first.dataset} / {first.split}: {metric} vs latency")
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    figure.savefig(scratch, format="png")
    plt.close(figure)
    os.replace(scratch, path)  # atomic: a reader never sees half a PNG
    return path
