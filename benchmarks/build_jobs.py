"""Evidence for build jobs: two builds of the same ``build.toml`` give the same indexes.

``compare A B``: for every index under index root A that B also has (same ``<dataset>/<kind>-<digest>``), the
non-Lucene files must be byte-identical (embeddings, token arrays, codes; Lucene segment files carry timestamps
and segment names, so they are compared through search instead), and a retriever opened on each must return the
same top-``k`` ids and scores for every query of the dataset. ``kill CONFIG OUTPUT``: runs ``braid index build
--config`` and SIGKILLs it once ``--after`` shard checkpoints exist, then runs it again to completion.

    python -m benchmarks.build_jobs kill --after 28 benchmarks/build_scifact.toml builds/resumed -- --ray local
    python -m benchmarks.build_jobs compare builds/reference builds/resumed --dataset scifact
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from braid.common.dataset_resolver import resolve_dataset
from braid.indexer.manifest import MANIFEST_NAME, Manifest
from braid.indexer.verify import indexes_under
from braid.pipelines.pipeline import open_index_retriever
from braid.retriever.kinds import RETRIEVER_KINDS

REPO = Path(__file__).resolve().parents[1]
LUCENE_DIRS = ("impact/",)


def _lucene_file(kind: str, name: str) -> bool:
    return kind == "bm25" or name.startswith(LUCENE_DIRS)


def compare(a: Path, b: Path, dataset_name: str, k: int, data_dir: str | None) -> int:
    dataset = resolve_dataset(dataset_name, data_dir)
    queries = dataset.queries()
    failures = 0
    for left in indexes_under(a):
        right = b / left.relative_to(a)
        if not (right / MANIFEST_NAME).is_file():
            print(f"skip    {left.relative_to(a)}: not in {b}")
            continue
        ma, mb = Manifest.read(left), Manifest.read(right)
        files = [n for n in ma.files if not _lucene_file(ma.kind, n)]
        differing = [n for n in files if ma.files[n] != mb.files.get(n)]
        searchable = any(info.index.name == ma.kind for info in RETRIEVER_KINDS.values())
        same_hits = None
        if searchable:
            ra, rb = open_index_retriever(left, {}), open_index_retriever(right, {})
            depth = min(k, ma.doc_count)
            hits_a, hits_b = ra.batch_search(queries, depth), rb.batch_search(queries, depth)
            same_hits = sum(
                [(h.doc_id, round(h.score, 6)) for h in hits_a.get(q, [])]
                == [(h.doc_id, round(h.score, 6)) for h in hits_b.get(q, [])]
                for q in queries
            )
        ok = not differing and (same_hits is None or same_hits == len(queries)) and ma.doc_count == mb.doc_count
        failures += not ok
        search = f"{same_hits}/{len(queries)} queries same top-{k}" if searchable else "no retriever"
        print(
            f"{'same' if ok else 'DIFFER':<7} {ma.kind:<12} {ma.doc_count:>7} docs  {len(files) - len(differing)}/"
            f"{len(files)} non-Lucene files identical  {search}"
        )
        for name in differing[:5]:
            print(f"        differs: {name}")
    return 1 if failures else 0


def kill_and_resume(config: Path, output: Path, after: int, extra: list[str]) -> int:
    command = [sys.executable, "-m", "braid", "index", "build", "--config", str(config),
               "--output", str(output), *extra]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    started = time.monotonic()
    while process.poll() is None:
        done = list(output.glob(".jobs/*/shards/*/*/shard.json"))
        if len(done) >= after:
            # The whole process group: with --ray, the Ray workers die too, mid-shard.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            print(f"SIGKILL after {time.monotonic() - started:.0f} s with {len(done)} shard checkpoints", flush=True)
            break
        time.sleep(0.5)
    else:
        print("the build finished before it could be killed; lower --after", file=sys.stderr)
        return 1
    if "--ray" in extra:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], check=False)
    leftovers = [p.name for p in output.rglob(".*.tmp-*")]
    print(f"partial state after the kill: {len(leftovers)} unfinished temporary folder(s) {leftovers[:4]}", flush=True)
    resumed = subprocess.run(command, cwd=REPO)
    report = json.loads(next(output.glob(".jobs/*/report.json")).read_text())
    print(json.dumps([{k: r[k] for k in ("kind", "shards", "shards_reused", "status")} for r in report]))
    return resumed.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    compare_parser = actions.add_parser("compare")
    compare_parser.add_argument("a", type=Path)
    compare_parser.add_argument("b", type=Path)
    compare_parser.add_argument("--dataset", required=True)
    compare_parser.add_argument("--data-dir")
    compare_parser.add_argument("-k", type=int, default=100)
    kill_parser = actions.add_parser("kill")
    kill_parser.add_argument("config", type=Path)
    kill_parser.add_argument("output", type=Path)
    kill_parser.add_argument("--after", type=int, default=4, help="shard checkpoints before the SIGKILL")
    kill_parser.add_argument("extra", nargs=argparse.REMAINDER, help="more braid index build arguments, after --")
    args = parser.parse_args()
    if args.action == "kill" and args.extra[:1] == ["--"]:
        args.extra = args.extra[1:]
    if args.action == "compare":
        sys.exit(compare(args.a, args.b, args.dataset, args.k, args.data_dir))
    sys.exit(kill_and_resume(args.config, args.output, args.after, args.extra))


if __name__ == "__main__":
    main()
