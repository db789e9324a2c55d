"""TREC run files in and out (``qid Q0 docid rank score tag``), the lingua franca of IR evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from braid.common.atomic_file import atomic_write_text
from braid.common.errors import DataFormatError

Run = dict[str, dict[str, float]]


def trec_rows(path: Path, layout: str) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, fields) of each non-blank line of a whitespace-separated TREC file (runs, qrels); a line
    with another number of fields than ``layout`` names is an error naming the file, the line and the layout."""
    width = len(layout.split())
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != width:
                raise DataFormatError(path, number, f"expected {layout!r}, got {len(fields)} fields")
            yield number, fields


def read_run(path: Path) -> Run:
    run: Run = {}
    for number, (qid, _, doc_id, _, score, _) in trec_rows(path, "qid Q0 docid rank score tag"):
        try:
            run.setdefault(qid, {})[doc_id] = float(score)
        except ValueError:
            raise DataFormatError(path, number, f"score must be a number, got {score!r}") from None
    return run


def write_run(path: Path, run: Run, tag: str) -> None:
    """Write ``run`` ranked by descending score; atomic, so a reader never sees half a file."""
    tag = "".join(ch if not ch.isspace() else "_" for ch in tag) or "braid"
    lines = []
    for qid, scores in run.items():
        ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
        lines += [f"{qid} Q0 {doc_id} {rank} {score:.6f} {tag}\n" for rank, (doc_id, score) in enumerate(ranked, 1)]
    atomic_write_text(Path(path), "".join(lines))


def drop_self_hits(run: Run) -> Run:
    """Remove hits whose document id equals the query id, as BEIR and pyserini's --remove-query do.

    This matters for ArguAna, whose queries are documents of the corpus: the query itself would otherwise
    be retrieved at rank 1 and counted as non-relevant.
    """
    return {qid: {doc: score for doc, score in scores.items() if doc != qid} for qid, scores in run.items()}
