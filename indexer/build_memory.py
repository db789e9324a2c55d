"""What an index build will hold in memory, estimated before it starts, and the budget it must fit.

Builds stream (each kind's module says how): documents are encoded and written a batch at a time, the encoders'
graphs run a few texts per call (:mod:`braid.indexer.graph_rows`), Lucene flushes from a bounded buffer, k-means and
the binarizer train on bounded samples. So a build's peak is a fixed working set, nearly independent of the
collection: the interpreter with torch and the JVM, the encoder (its weights, held by PyTorch and by the compiled
graph, and the graph's per-call buffers) and a few parts that do grow with the collection, named in
:func:`estimate_build_bytes`. The constants below come from ``benchmarks/build_memory.py`` (2-core AVX2 machine,
peak RSS of each kind at two collection sizes) and round up: the estimate is meant to be above the measured peak.

A build whose estimate exceeds the budget (``--memory-budget``, or ``$BRAID_MEMORY_BUDGET``; none by default) is
refused before it starts, with the estimate, instead of being killed by the kernel halfway.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from braid.common.dataset import Dataset
from braid.common.errors import BraidError

BUDGET_ENV = "BRAID_MEMORY_BUDGET"
GB = 1 << 30
MB = 1 << 20

# Python with numpy, faiss and braid imported.
PROCESS_BYTES = 300 * MB
# PyTorch and the model libraries, for the kinds that encode or train.
TORCH_BYTES = 300 * MB
# The JVM with Lucene and Anserini, its heap touched by an indexing run (64 MB buffer, 1 GB heap ceiling).
JVM_BYTES = 350 * MB
# An encoder holds its weights about four times (PyTorch's copy, the exported graph compiled by OpenVINO or ONNX
# Runtime, the runtime's own packing) and the graph's per-call buffers (graph_rows.CALL_ELEMENTS, in every layer).
ENCODER_WEIGHT_COPIES = 4
ENCODER_WORKING_BYTES = 500 * MB
# A kind built from another index (multivector from tokens, binary from embeddings) usually builds it first in the
# same process, and memory that build freed is not all returned to the system.
DEPENDENCY_RESIDUE_BYTES = 400 * MB
# A checkpoint named by hub name that is not on this machine: sized as a BERT-base.
UNKNOWN_MODEL_BYTES = 440 * MB
# Per document: its id (Python string and list slot, twice: the index's list and the build's) and offsets.
PER_DOCUMENT_BYTES = 256

LUCENE_KINDS = ("bm25", "splade", "slim")
ENCODED_KINDS = ("embeddings", "splade", "slim", "tokens")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)


def parse_size(text: str | int | float) -> int:
    """Bytes from ``3GB``, ``3g``, ``512MiB``, ``1.5G`` or a plain number of bytes."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise BraidError(f"memory size {text!r} is not a size like 3GB, 512MB or 1.5G")
        value, unit = float(match.group(1)), match.group(2).lower()
    size = int(value * {"": 1, "k": 1 << 10, "m": MB, "g": GB, "t": 1 << 40}[unit])
    if size <= 0:
        raise BraidError(f"memory size must be positive, got {text!r}")
    return size


def memory_budget() -> int | None:
    """The build memory budget in bytes from ``$BRAID_MEMORY_BUDGET`` (None: no budget)."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    return parse_size(text) if text else None


def model_bytes(model: str) -> int:
    """Bytes of a checkpoint's weight files (embedded name or folder); a hub name not on disk gets a guess."""
    from braid.common.model_source import resolve_model

    try:
        folder = Path(resolve_model(model))
    except BraidError:
        return UNKNOWN_MODEL_BYTES
    if not folder.is_dir():
        return UNKNOWN_MODEL_BYTES
    weights = [path for path in folder.rglob("*") if path.suffix in (".safetensors", ".bin", ".gguf", ".pt", ".onnx")]
    return sum(path.stat().st_size for path in weights) or UNKNOWN_MODEL_BYTES


def _corpus_documents(dataset: Dataset) -> int:
    """Documents in the corpus, counted as lines of its files (a JSON-lines corpus has one per line)."""
    count = 0
    for path in dataset.corpus_files:
        with Path(path).open("rb") as handle:
            count += sum(block.count(b"\n") for block in iter(lambda h=handle: h.read(1 << 20), b""))
    return count


def estimate_build_bytes(
    kind: str, params: dict, documents: int, tokens: int | None = None, dimension: int = 384
) -> dict[str, int]:
    """The parts of one build's peak resident memory, in bytes (their sum is the estimate).

    ``documents``: the collection's size; ``tokens``: for multivector, the token vectors it pools (from its tokens
    index); ``dimension``: the vectors' width."""
    from braid.indexer.binary_index import TRAINING_LIMIT
    from braid.indexer.multivector_index import ASSIGN_CHUNK, MAX_POINTS_PER_CENTROID, SAMPLE_LIMIT, centroid_count

    parts = {"process": PROCESS_BYTES, "documents": documents * PER_DOCUMENT_BYTES}
    if kind != "bm25":
        parts["torch"] = TORCH_BYTES
    if kind in ("multivector", "binary"):
        parts["dependency build"] = DEPENDENCY_RESIDUE_BYTES
    if kind in LUCENE_KINDS:
        parts["jvm"] = JVM_BYTES
    if kind in ENCODED_KINDS:
        parts["encoder"] = ENCODER_WEIGHT_COPIES * model_bytes(params["model"]) + ENCODER_WORKING_BYTES
    if kind == "binary":
        # Training sample (float32, with the optimizer's batches), then codes twice (the array and faiss's copy).
        parts["binarizer training"] = 3 * min(documents, TRAINING_LIMIT) * dimension * 4
        width = int(params.get("width", 0) or dimension)
        parts["codes"] = 2 * documents * int(params.get("bits", 1)) * width // 8
    if kind == "multivector":
        total = tokens if tokens is not None else documents * 256
        count = centroid_count(total, int(params.get("centroids", 0)))
        sample = min(total, count * MAX_POINTS_PER_CENTROID, SAMPLE_LIMIT)
        parts["k-means sample"] = 2 * sample * dimension * 4
        parts["assignment chunk"] = 2 * ASSIGN_CHUNK * dimension * 4
        parts["offsets"] = documents * 8
    return parts


def check_memory_budget(
    dataset: Dataset, kind: str, params: dict, budget: int | None = None, tokens_index: Path | None = None
) -> dict[str, int]:
    """Refuse, before anything is built, a build whose estimate exceeds ``budget`` (default: :func:`memory_budget`);
    returns the estimate's parts."""
    budget = memory_budget() if budget is None else budget
    if budget is None:
        return {}
    tokens = None
    if tokens_index is not None and (Path(tokens_index) / "tokens.json").is_file():
        tokens = int(json.loads((Path(tokens_index) / "tokens.json").read_text(encoding="utf-8"))["tokens"])
    parts = estimate_build_bytes(kind, params, _corpus_documents(dataset), tokens)
    total = sum(parts.values())
    if total > budget:
        listing = ", ".join(f"{name} {math.ceil(value / MB)} MB" for name, value in parts.items() if value)
        raise BraidError(
            f"building the {kind} index of {dataset.name} needs about {total / GB:.2f} GB of memory ({listing}), "
            f"over the memory budget of {budget / GB:.2f} GB (--memory-budget / ${BUDGET_ENV}); "
            "raise the budget or build on a larger machine"
        )
    return parts
