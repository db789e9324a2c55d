"""Per-document costs of each index kind, from a finished build job, projected to 10M and 100M documents.

Reads the manifests under an index root and the job's ``report.json``: bytes per document (index files, plus
what it depends on, listed separately), encode and build milliseconds per document on one worker, then linear
projections of disk and single-worker build time. Usage:

    python -m benchmarks.scaling_table builds/reference --output results/scaling.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from braid.indexer.manifest import Manifest
from braid.indexer.verify import indexes_under

SIZES = (10_000_000, 100_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    report = {r["kind"]: r for path in args.root.glob(".jobs/*/report.json") for r in json.loads(path.read_text())}
    rows = []
    for path in indexes_under(args.root):
        manifest = Manifest.read(path)
        run = report.get(manifest.kind, {})
        docs = manifest.doc_count
        seconds = (run.get("encode_seconds") or 0) + (run.get("assemble_seconds") or 0) or run.get("wall_seconds")
        row = {
            "kind": manifest.kind,
            "documents": docs,
            "bytes_per_doc": round(manifest.index_bytes / docs, 1),
            "encode_ms_per_doc": round(1000 * run["encode_seconds"] / docs, 2) if run.get("encode_seconds") else None,
            "build_ms_per_doc": round(1000 * seconds / docs, 2) if seconds else None,
        }
        for size in SIZES:
            row[f"disk_GB_{size // 1_000_000}M"] = round(row["bytes_per_doc"] * size / 1e9, 1)
            if row["build_ms_per_doc"]:
                row[f"build_hours_1_worker_{size // 1_000_000}M"] = round(row["build_ms_per_doc"] * size / 3.6e6, 1)
        rows.append(row)
    columns = ["kind", "bytes_per_doc", "encode_ms_per_doc", "build_ms_per_doc", "disk_GB_10M", "disk_GB_100M",
               "build_hours_1_worker_10M", "build_hours_1_worker_100M"]  # fmt: skip
    print(" | ".join(columns))
    for row in rows:
        print(" | ".join(str(row.get(column, "-")) for column in columns))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
