"""Where indexes live under ``--index-dir`` and when an existing one can be reused.

Layout: ``INDEX_DIR/<dataset>/<kind>-<digest>``, where the digest covers the kind, its build parameters
and the corpus checksum, so different settings or a changed corpus never collide or get silently reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from braid.common.dataset import Dataset
from braid.common.errors import BraidError
from braid.common.peak_memory import PeakMemory
from braid.indexer.atomic_dir import atomic_directory
from braid.indexer.build_memory import check_memory_budget
from braid.indexer.encoder_cache import release_encoders
from braid.indexer.kinds import index_kind
from braid.indexer.manifest import MANIFEST_NAME, Manifest
from braid.indexer.onnx_transformer import encoder_runtime, quantized


def index_identity(kind: str, params: dict) -> dict:
    """What tells two builds of one corpus apart: the kind, its parameters and, for encoded kinds built with an
    encoder runtime that changes the vectors (int8), that runtime. Float32 runtimes (eager PyTorch, ONNX Runtime)
    agree to ~1e-6 and share folders."""
    declared = index_kind(kind).params
    # A parameter added later, at its default, leaves the folder name of every index built before it as it was.
    params = {
        name: value
        for name, value in params.items()
        if not (name in declared and declared[name].added and value == declared[name].default)
    }
    identity = {"kind": kind, "params": params}
    runtime = encoder_runtime()
    if quantized(runtime) and index_kind(kind).encoded:
        identity["encoder_runtime"] = runtime
    return identity


def index_path(dataset: Dataset, kind: str, params: dict, index_root: Path) -> Path:
    key = json.dumps({**index_identity(kind, params), "corpus": dataset.corpus_checksum()}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(index_root) / dataset.name / f"{kind}-{digest}"


def find_index(dataset: Dataset, kind: str, params: dict, index_root: Path, edited: bool = False) -> Path | None:
    """Return the complete index matching kind, parameters and corpus, or None.

    ``edited``: also that index after document updates (serving shards are found this way after an update; an
    unsharded service pins the folders it serves instead)."""
    params = index_kind(kind).validate(params)
    path = index_path(dataset, kind, params, index_root)
    if (path / MANIFEST_NAME).is_file():
        manifest = Manifest.read(path)
        checksum = dataset.corpus_checksum()
        if manifest.derives_from(kind, params, checksum) if edited else manifest.matches(kind, params, checksum):
            return path
    return None


def build_index(
    dataset: Dataset,
    kind: str,
    params: dict,
    index_root: Path | None = None,
    output: Path | None = None,
    threads: int | None = None,
    force: bool = False,
    quiet: bool = False,
    trained: Path | None = None,
    durable: bool = True,
) -> tuple[Path, Manifest, bool]:
    """Build (or reuse) an index; returns its path, manifest and whether it was built now (``quiet``: no summary
    line, for the small builds of a live collection's writes; ``trained``: an index of the whole collection whose
    trained parts, a binarizer or centroids, this one reuses, passed to kinds whose builder takes them; ``durable``
    False: not synced to disk, for indexes a crash recovery rebuilds from a write-ahead log)."""
    spec = index_kind(kind)
    params = spec.validate(params)
    if output is None:
        if index_root is None:
            raise ValueError("build_index needs index_root or output")
        output = index_path(dataset, kind, params, index_root)
    output = Path(output)
    if not force and (output / MANIFEST_NAME).is_file():
        manifest = Manifest.read(output)
        if manifest.matches(kind, params, dataset.corpus_checksum()):
            return output, manifest, False
        if manifest.corpus_checksum.startswith("edited:"):
            # Documents were added or deleted by hand: rebuilding from the dataset would silently undo that.
            raise BraidError(
                f"{output} holds an index whose documents were edited (index add/delete); "
                "pass --force to rebuild it from the dataset, or build elsewhere with --index-dir/--output"
            )
        if index_root is None:
            raise BraidError(f"{output} holds a different index ({manifest.kind}); pass --force to replace it")
    elif output.exists() and not force and any(output.iterdir()):
        raise BraidError(f"{output} exists and is not a braid index; choose another --output or pass --force")
    started = time.perf_counter()
    dependencies: dict[str, Path] = {}
    for role, (dep_kind, dep_params) in (spec.requires(params) if spec.requires else {}).items():
        # Shared inputs (e.g. embeddings) live beside their consumers and are built once for all of them.
        dep_root = index_root if index_root is not None else output.parent
        dependencies[role], _, _ = build_index(
            dataset, dep_kind, dep_params, index_root=dep_root, threads=threads, quiet=quiet, durable=durable
        )
    if not quiet:
        check_memory_budget(dataset, kind, params, tokens_index=dependencies.get("tokens"))
    with atomic_directory(output, overwrite=True, durable=durable) as scratch:
        extra = {"trained": Path(trained)} if trained is not None else {}
        # A live collection's small builds run beside other builds and searches, whose memory a measurement would
        # count as theirs: only a build that has the process to itself measures its peak.
        with nullcontext() if quiet else PeakMemory() as peak:
            count = spec.build(dataset, scratch, params, threads, **dependencies, **extra)
        manifest = Manifest(
            kind=kind,
            params=params,
            dataset=dataset.name,
            doc_count=count,
            corpus_checksum=dataset.corpus_checksum(),
            build_seconds=round(time.perf_counter() - started, 3),
            depends_on={role: os.path.relpath(path.resolve(), output.resolve()) for role, path in dependencies.items()},
            build={"peak_rss_bytes": peak.bytes} if peak is not None else {},
        )
        manifest.write(scratch)
    if not quiet:
        # The encoders a build loaded are not kept: what serves queries loads its own (cached_encoder's roles), and
        # a process that builds several indexes (braid eval) would otherwise hold every build model at once.
        release_encoders("build")
        print(
            f"built {kind} index of {count} documents in {time.perf_counter() - started:.1f}s, "
            f"peak RSS {peak.bytes / 2**30:.2f} GB: {output}",
            file=sys.stderr,
        )
    return output, manifest, True
