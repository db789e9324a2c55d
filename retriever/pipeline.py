"""Pipelines: which retrievers run, with which parameters, and how deep.

A pipeline is a TOML file (or the same structure built in Python)::

    name = "bm25"
    [[retrievers]]
    kind = "bm25"
    k1 = 0.9
    b = 0.4

Built-in pipelines ship in ``retriever/pipelines/`` and are addressed by name. Files are validated on load:
unknown keys, unknown kinds and ill-typed values are reported with the allowed values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from eval.dataset import Dataset
from eval.errors import BraidError
from indexer.index_store import build_index, find_index
from indexer.manifest import Manifest
from retriever.hit import Hit
from retriever.kinds import RETRIEVER_KINDS, RetrieverKind

PIPELINE_KEYS = {"name", "retrievers", "description"}
RETRIEVER_KEYS = {"kind", "depth"}


@dataclass(frozen=True)
class RetrieverSpec:
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    depth: int = 1000

    @property
    def kind_info(self) -> RetrieverKind:
        return RETRIEVER_KINDS[self.kind]

    def index_params(self) -> dict[str, Any]:
        return {name: self.params[name] for name in self.kind_info.index_params}

    def search_params(self) -> dict[str, Any]:
        return {name: self.params[name] for name in self.kind_info.search_params}


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    retrievers: tuple[RetrieverSpec, ...]
    description: str = ""


def builtin_pipelines() -> dict[str, Path]:
    folder = resources.files("retriever") / "pipelines"
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if str(entry).endswith(".toml")}


def _coerce(where: str, name: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise BraidError(f"{where}: {name} must be an integer, got {value!r}")
    if not isinstance(value, expected):
        raise BraidError(f"{where}: {name} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse_retriever(raw: Mapping[str, Any], where: str) -> RetrieverSpec:
    if not isinstance(raw, Mapping):
        raise BraidError(f"{where}: a retriever must be a table")
    kind = raw.get("kind")
    if kind is None:
        raise BraidError(f"{where}: missing field 'kind' (allowed: {', '.join(RETRIEVER_KINDS)})")
    if kind not in RETRIEVER_KINDS:
        raise BraidError(f"{where}: unknown retriever kind {kind!r} (allowed: {', '.join(RETRIEVER_KINDS)})")
    info = RETRIEVER_KINDS[kind]
    unknown = set(raw) - RETRIEVER_KEYS - set(info.params)
    if unknown:
        allowed = sorted(RETRIEVER_KEYS | set(info.params))
        raise BraidError(f"{where}: unknown field(s) {sorted(unknown)} for {kind} (allowed: {', '.join(allowed)})")
    params = {name: _coerce(where, name, raw.get(name, p.default), p.type) for name, p in info.params.items()}
    depth = _coerce(where, "depth", raw.get("depth", 1000), int)
    if depth < 1:
        raise BraidError(f"{where}: depth must be >= 1, got {depth}")
    return RetrieverSpec(kind=kind, params=params, depth=depth)


def parse_pipeline(raw: Mapping[str, Any], source: str) -> PipelineSpec:
    unknown = set(raw) - PIPELINE_KEYS
    if unknown:
        raise BraidError(f"{source}: unknown field(s) {sorted(unknown)} (allowed: {', '.join(sorted(PIPELINE_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise BraidError(f"{source}: missing field 'name' (a non-empty string)")
    retrievers = raw.get("retrievers")
    if not isinstance(retrievers, list) or not retrievers:
        raise BraidError(f"{source}: missing field 'retrievers' (one or more [[retrievers]] tables)")
    specs = tuple(parse_retriever(item, f"{source}: retrievers[{i}]") for i, item in enumerate(retrievers))
    if len(specs) > 1:
        raise BraidError(f"{source}: a pipeline has one retriever until fusion is available, got {len(specs)}")
    return PipelineSpec(name=name, retrievers=specs, description=str(raw.get("description", "")))


def load_pipeline(name_or_file: str) -> PipelineSpec:
    """Load a built-in pipeline by name or a pipeline TOML file by path."""
    path = Path(name_or_file)
    if not path.is_file():
        builtins = builtin_pipelines()
        if name_or_file not in builtins:
            names = ", ".join(sorted(builtins))
            raise BraidError(f"unknown pipeline {name_or_file!r}: not a file, nor a built-in (built-ins: {names})")
        path = builtins[name_or_file]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise BraidError(f"{path}: invalid TOML: {error}") from None
    return parse_pipeline(raw, str(path))


class Pipeline:
    """A pipeline opened over concrete indexes, ready to search."""

    def __init__(self, spec: PipelineSpec, stages: list[tuple[RetrieverSpec, Any, Path]]) -> None:
        self.spec = spec
        self.stages = stages

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def depth(self) -> int:
        return self.spec.retrievers[0].depth

    @property
    def index_paths(self) -> list[Path]:
        return [path for _, _, path in self.stages]

    def index_bytes(self) -> int:
        return sum(Manifest.read(path).index_bytes for path in self.index_paths)

    def build_docs_per_second(self) -> float | None:
        """Build throughput of the pipeline's indexes taken together (documents / total build seconds)."""
        manifests = [Manifest.read(path) for path in self.index_paths]
        seconds = [m.build_seconds for m in manifests]
        if not manifests or any(not value for value in seconds):
            return None
        return manifests[0].doc_count / sum(seconds)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        check_query(query)
        _, retriever, _ = self.stages[0]
        return retriever.search(query, k)

    def batch_search(self, queries: Mapping[str, str], k: int | None = None) -> dict[str, list[Hit]]:
        _, retriever, _ = self.stages[0]
        return retriever.batch_search(queries, k or self.depth)

    def document_text(self, doc_id: str) -> str | None:
        for _, retriever, _ in self.stages:
            text = getattr(retriever, "document_text", lambda _id: None)(doc_id)
            if text is not None:
                return text
        return None


def check_query(query: str) -> None:
    if not query or not query.strip():
        raise BraidError("empty query: give some query text")


def open_pipeline(
    spec: PipelineSpec, dataset: Dataset, index_root: Path, threads: int | None = None, build_missing: bool = True
) -> Pipeline:
    """Find (or build) every index the pipeline needs and open its retrievers."""
    stages = []
    for retriever_spec in spec.retrievers:
        info = retriever_spec.kind_info
        params = retriever_spec.index_params()
        path = find_index(dataset, info.index_kind, params, index_root)
        if path is None:
            if not build_missing:
                raise BraidError(
                    f"no {info.index_kind} index for {dataset.name} under {index_root}; "
                    f"run: braid index build --dataset {dataset.name} --kind {info.index_kind}"
                )
            path, _, _ = build_index(dataset, info.index_kind, params, index_root=index_root, threads=threads)
        stages.append((retriever_spec, info.open(path, retriever_spec.search_params(), threads), path))
    return Pipeline(spec, stages)


def open_index_retriever(index_dir: Path, search_params: Mapping[str, Any], threads: int | None = None) -> Any:
    """Open a retriever directly over an index folder, choosing the kind from its manifest."""
    manifest = Manifest.read(index_dir)
    kinds = [info for info in RETRIEVER_KINDS.values() if info.index_kind == manifest.kind]
    if not kinds:
        raise BraidError(f"{index_dir}: no retriever can search a {manifest.kind!r} index")
    info = kinds[0]
    for name, value in search_params.items():
        if name in info.index_params:
            # Build-time settings are fixed by the index: asking for another value (say, another encoder) is
            # an error, not something to ignore silently.
            built = manifest.params.get(name)
            if built != value:
                raise BraidError(f"{index_dir} was built with {name}={built!r}, not {value!r}; build an index for it")
        elif name not in info.search_params:
            allowed = ", ".join(sorted(info.params))
            raise BraidError(f"unknown parameter {name!r} for a {manifest.kind} index (allowed: {allowed})")
    params = {
        name: _coerce(str(index_dir), name, search_params.get(name, p.default), p.type)
        for name, p in info.search_params.items()
    }
    return info.open(Path(index_dir), params, threads)
