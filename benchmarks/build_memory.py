"""Peak memory of index builds at two collection sizes: does a build's RSS grow with the corpus?

For each size N and 4N (the first documents of ``--base``, repeated under fresh ids when the collection runs out),
every index kind is built in its own ``braid index build`` process, and the built-in ``hybrid-max`` pipeline's
indexes in one ``braid eval`` process (its four retrievers' kinds at 512 tokens, the way a user builds it), each
under a fresh ``--index-dir``. From each process: its peak RSS (the kernel's high-water mark, as ``/usr/bin/time -v``
reports it, from ``wait4``), its wall time and documents/s, and the peak RSS each index's manifest records (the
build's own measurement) beside the estimate the memory budget checks.

Goals (bounded-memory builds issue): peak at 4N within 20% of peak at N, below 3 GB for every kind; documents/s
within 10% between the sizes.

    python -m benchmarks.build_memory --base scifact --size 1000 --output results/build_memory.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from braid.common.cpu_features import timing_flags
from braid.common.dataset_resolver import resolve_dataset
from braid.indexer.build_memory import estimate_build_bytes
from braid.indexer.manifest import Manifest

KINDS = ("bm25", "embeddings", "splade", "tokens", "multivector", "binary", "slim")
REPO = Path(__file__).resolve().parents[1]
GB = 1 << 30


def write_collection(base, size: int, folder: Path) -> Path:
    """``size`` documents of ``base`` in BEIR layout (corpus only), its documents again under ids ``ID~c1``,
    ``ID~c2``... once it runs out."""
    folder.mkdir(parents=True)
    copies = itertools.chain.from_iterable(
        ((doc if copy == 0 else replace(doc, doc_id=f"{doc.doc_id}~c{copy}")) for doc in base.iter_corpus())
        for copy in itertools.count()
    )
    with (folder / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        for doc in itertools.islice(copies, size):
            handle.write(json.dumps({"_id": doc.doc_id, "title": doc.title, "text": doc.text}) + "\n")
    return folder


def run_measured(command: list[str], log: Path) -> tuple[int, float, int]:
    """Run ``command``; its exit status, wall seconds and peak RSS in bytes (from wait4's rusage)."""
    started = time.perf_counter()
    with log.open("w") as handle:
        process = subprocess.Popen(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss * 1024


def manifests(index_root: Path) -> list[dict]:
    """What each index built under ``index_root`` recorded: kind, documents, seconds, peak RSS."""
    rows = []
    for path in sorted(index_root.glob("*/*/manifest.json")):
        manifest = Manifest.read(path.parent)
        rows.append(
            {
                "kind": manifest.kind,
                "documents": manifest.doc_count,
                "build_seconds": manifest.build_seconds,
                "peak_rss_bytes": manifest.build.get("peak_rss_bytes"),
            }
        )
    return rows


def estimate(kind: str, index_root: Path, documents: int) -> int | None:
    """The memory budget's estimate for the index of ``kind`` built under ``index_root``."""
    for path in index_root.glob(f"*/{kind}-*/manifest.json"):
        manifest = Manifest.read(path.parent)
        tokens = None
        if kind == "multivector":
            tokens_dir = manifest.dependency(path.parent, "tokens")
            tokens = json.loads((tokens_dir / "tokens.json").read_text(encoding="utf-8"))["tokens"]
        return sum(estimate_build_bytes(kind, manifest.params, documents, tokens).values())
    return None


def measure(collection: Path, kinds: list[str], pipelines: list[str], work: Path) -> list[dict]:
    documents = sum(1 for _ in (collection / "corpus.jsonl").open(encoding="utf-8"))
    results = []
    for kind in kinds:
        root = work / f"idx-{collection.name}-{kind}"
        command = [sys.executable, "-m", "braid", "index", "build", "--dataset", str(collection), "--kind", kind,
                   "--index-dir", str(root)]  # fmt: skip
        code, seconds, peak = run_measured(command, work / f"{collection.name}-{kind}.log")
        if code:
            raise SystemExit(f"{kind} build failed ({code}): see {work / f'{collection.name}-{kind}.log'}")
        built = [row for row in manifests(root) if row["kind"] == kind]
        results.append(
            {
                "what": kind,
                "documents": documents,
                "peak_rss_bytes": peak,
                "seconds": round(seconds, 2),
                "docs_per_s": round(documents / built[0]["build_seconds"], 2) if built else None,
                "manifest_peak_rss_bytes": built[0]["peak_rss_bytes"] if built else None,
                "estimate_bytes": estimate(kind, root, documents),
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    for pipeline in pipelines:
        root = work / f"idx-{collection.name}-{pipeline}"
        # Building is what is measured: the pipeline is opened (its indexes built, its retrievers and their query
        # encoders loaded, as braid eval and braid serve do) in a process of its own.
        command = [sys.executable, "-m", "benchmarks.build_memory", "--open-pipeline", pipeline, str(collection),
                   str(root)]  # fmt: skip
        code, seconds, peak = run_measured(command, work / f"{collection.name}-{pipeline}.log")
        if code:
            raise SystemExit(f"{pipeline} build failed ({code}): see {work / f'{collection.name}-{pipeline}.log'}")
        built = manifests(root)
        results.append(
            {
                "what": pipeline,
                "documents": documents,
                "peak_rss_bytes": peak,
                "seconds": round(seconds, 2),
                "docs_per_s": round(documents / sum(row["build_seconds"] for row in built), 2),
                "indexes": built,
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)
    return results


def open_pipeline_process(pipeline: str, collection: str, index_root: str) -> int:
    """The measured process of a pipeline build: open ``pipeline`` on ``collection``, building its indexes."""
    from braid.pipelines.pipeline import open_pipeline
    from braid.pipelines.spec import load_pipeline

    dataset = resolve_dataset(collection, Path(collection).parent)
    opened = open_pipeline(load_pipeline(pipeline), dataset, Path(index_root))
    print(f"opened {pipeline}: {opened.doc_count} documents", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--open-pipeline"]:
        return open_pipeline_process(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="scifact", help="collection whose documents are built (default scifact)")
    parser.add_argument("--size", type=int, default=1000, help="N: documents of the smaller build (4N the larger)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), help=f"index kinds (default: {' '.join(KINDS)})")
    parser.add_argument("--pipelines", nargs="*", default=["hybrid-max"], help="pipelines built in one process each")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("BRAID_DATA_DIR", "data")))
    parser.add_argument("--output", type=Path, help="JSON results file")
    args = parser.parse_args(argv)
    base = resolve_dataset(args.base, args.data_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="braid-build-memory-") as scratch:
        work = Path(scratch)
        for size in (args.size, 4 * args.size):
            collection = write_collection(base, size, work / f"{base.name}-{size}")
            rows += measure(collection, args.kinds, args.pipelines, work)
    by_what: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_what.setdefault(row["what"], {})[row["documents"]] = row
    print(f"\nbuild peak RSS, {base.name} at N = {args.size} and 4N; CPU {platform.machine()} {os.cpu_count()} cores "
          f"({timing_flags()})")  # fmt: skip
    header = f"{'built':<14}{'peak N':>10}{'peak 4N':>10}{'4N / N':>8}{'est. 4N':>10}{'doc/s N':>9}{'doc/s 4N':>9}"
    print(header + f"{'4N / N':>8}")
    summary = []
    for what, sizes in by_what.items():
        small, large = sizes[args.size], sizes[4 * args.size]
        ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
        speed = large["docs_per_s"] / small["docs_per_s"] if small["docs_per_s"] and large["docs_per_s"] else None
        estimate_text = f"{large['estimate_bytes'] / GB:.2f}" if large.get("estimate_bytes") else "-"
        print(
            f"{what:<14}{small['peak_rss_bytes'] / GB:>9.2f}G{large['peak_rss_bytes'] / GB:>9.2f}G{ratio:>8.2f}"
            f"{estimate_text:>9}G{small['docs_per_s'] or 0:>9.1f}{large['docs_per_s'] or 0:>9.1f}"
            f"{speed if speed is not None else float('nan'):>8.2f}"
        )
        summary.append({"what": what, "peak_ratio": round(ratio, 3), "docs_per_s_ratio": speed and round(speed, 3),
                        "peak_4n_gb": round(large["peak_rss_bytes"] / GB, 3)})  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        report = {"base": base.name, "size": args.size, "cpu_flags": timing_flags(), "cores": os.cpu_count(),
                  "rows": rows, "summary": summary}  # fmt: skip
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
