"""Pipeline definitions: which retrievers run and how deep, how their lists are fused, which cascade stages
rescore the head; read from TOML (or built in Python) and validated, written back by ``braid tune``.

A pipeline file::

    name = "hybrid"
    description = "BM25 + MiniLM + SPLADE-tiny, z-score fusion"

    [[retrievers]]
    name = "bm25"          # label used by weights and explanations (default: the kind)
    kind = "bm25"
    depth = 1000
    k1 = 0.9               # any parameter of the kind

    [[retrievers]]
    kind = "dense"
    index = "indexes/scifact/embeddings-aa63eb33d913"   # optional: a built index folder instead of by dataset

    [[retrievers]]
    kind = "multivector"
    scores_top = 100       # optional: score only the other retrievers' top 100 (their union), not the collection
    candidates_from = ["bm25", "dense"]   # optional, with scores_top: whose top 100 (default: every searching one)

    [fusion]               # required with two or more retrievers
    method = "weighted"    # rrf | weighted
    normalization = "zscore"   # minmax | zscore | none (weighted)
    k = 60                 # rrf
    weights = { bm25 = 0.4, dense = 0.6 }

    [per_dataset.nfcorpus-orig.fusion]   # optional: the fusion used on one collection instead of [fusion],
    method = "rrf"                       # written by ``braid tune --per-dataset`` from that collection's own
    k = 10                               # train or dev split
    weights = { bm25 = 0.5, dense = 0.5 }

    [[cascade]]            # optional: rescore the head of the list with a more precise scorer
    kind = "dense"
    depth = 100

    [rerank]               # optional: an LLM reorders the head last (ranker/, fields in ranker.rerank_spec)
    mode = "first"         # first | attention | generate
    depth = 20

Built-in pipelines ship in ``pipelines/builtin/`` (``braid.pipelines.builtin``) and are addressed by name. Unknown
keys, kinds, indexes and ill-typed values are reported with the allowed values.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from braid.common.atomic_file import atomic_write_text
from braid.common.errors import BraidError
from braid.ranker.rerank_spec import RerankSpec
from braid.retriever.fusion import METHODS, NORMALIZATIONS, FusionSpec, check_weight_total
from braid.retriever.kinds import RETRIEVER_KINDS, RetrieverKind

PIPELINE_KEYS = {"name", "description", "retrievers", "fusion", "per_dataset", "cascade", "rerank", "tuned"}
PER_DATASET_KEYS = {"fusion", "tuned"}
RETRIEVER_KEYS = {"name", "kind", "depth", "index", "scores_top", "candidates_from"}
FUSION_KEYS = {"method", "k", "normalization", "weights"}
CASCADE_KEYS = {"name", "kind", "depth", "index"}
DEFAULT_DEPTH = 1000


@dataclass(frozen=True)
class RetrieverSpec:
    """A first-stage retriever (or a cascade scorer): its kind, parameters, depth and optional index folder.

    ``scores_top`` > 0: the retriever does not search the collection; its list is its exact scores of the documents in
    the top ``scores_top`` of any other first-stage retriever (their union), fused like every list. A late-interaction
    model then costs a few hundred documents' scoring a query instead of a search of the collection (PLAID-style
    candidate generation, with the pipeline's other retrievers as the candidate generator). ``candidates_from`` names
    the retrievers whose tops it scores (default: every one that searches), so that its list stays the same list
    when the pipeline gains retrievers, and under any fusion weights.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    depth: int = DEFAULT_DEPTH
    name: str = ""
    index: str | None = None
    scores_top: int = 0
    candidates_from: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.kind)
        if self.candidates_from and not self.scores_top:
            raise BraidError(
                f"retriever {self.name!r}: candidates_from names whose top scores_top scores: add scores_top"
            )

    @property
    def kind_info(self) -> RetrieverKind:
        return RETRIEVER_KINDS[self.kind]

    def index_params(self) -> dict[str, Any]:
        return {name: self.params[name] for name in self.kind_info.index_params}

    def search_params(self) -> dict[str, Any]:
        return {name: self.params[name] for name in self.kind_info.search_params}


@dataclass(frozen=True)
class TunedFusion:
    """A fusion setting with where it was tuned: ``braid tune``'s result, and a collection's own setting.

    Which fusion family wins depends on the collection (Bruch et al., TOIS 2023, find the best convex combination
    collection-specific; on scifact a z-score weighted sum leads, on nfcorpus a low-k RRF): a collection with a
    tuning split can get its own setting (``per_dataset``), every other collection the pipeline's ``[fusion]``.
    """

    fusion: FusionSpec
    tuned: dict[str, Any] | None = None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    retrievers: tuple[RetrieverSpec, ...]
    fusion: FusionSpec | None = None
    cascade: tuple[RetrieverSpec, ...] = ()
    description: str = ""
    tuned: dict[str, Any] | None = None
    rerank: RerankSpec | None = None
    per_dataset: Mapping[str, TunedFusion] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.retrievers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise BraidError(f"pipeline {self.name!r}: retriever names must be unique; repeated: {duplicates}")
        if all(spec.scores_top for spec in self.retrievers):
            raise BraidError(
                f"pipeline {self.name!r}: a retriever with scores_top scores the other retrievers' candidates; "
                "at least one retriever must search the collection (scores_top = 0)"
            )
        searching = [spec.name for spec in self.retrievers if not spec.scores_top]
        for spec in self.retrievers:
            wrong = sorted(set(spec.candidates_from) - set(searching))
            if wrong or len(set(spec.candidates_from)) != len(spec.candidates_from):
                raise BraidError(
                    f"pipeline {self.name!r}: retriever {spec.name!r}: candidates_from must name searching retrievers"
                    f" once each (allowed: {', '.join(searching)}; got {', '.join(spec.candidates_from)})"
                )
        if len(self.retrievers) > 1 and self.fusion is None:
            raise BraidError(
                f"pipeline {self.name!r}: {len(self.retrievers)} retrievers need a [fusion] table "
                f"(method: {', '.join(METHODS)})"
            )
        if self.per_dataset and self.fusion is None:
            raise BraidError(f"pipeline {self.name!r}: per_dataset fusion needs two or more retrievers and a [fusion]")
        fusions = {"fusion": self.fusion, **{f"per_dataset.{n}.fusion": d.fusion for n, d in self.per_dataset.items()}}
        for where, fusion in fusions.items():
            if fusion is None or fusion.weights is None:
                continue
            unknown = sorted(set(fusion.weights) - set(names))
            missing = sorted(set(names) - set(fusion.weights))
            if unknown or missing:
                raise BraidError(
                    f"pipeline {self.name!r}: {where} weights must name each retriever once "
                    f"(retrievers: {', '.join(names)}; unknown: {unknown or 'none'}; missing: {missing or 'none'})"
                )
            check_weight_total(fusion, names, f"pipeline {self.name!r}: {where}")

    @property
    def depth(self) -> int:
        return max(spec.depth for spec in self.retrievers)

    def with_fusion(self, tuned: TunedFusion, dataset: str | None = None) -> PipelineSpec:
        """This pipeline with ``tuned`` as its ``[fusion]`` (and ``[tuned]``), or as ``dataset``'s own setting."""
        if dataset is None:
            return replace(self, fusion=tuned.fusion, tuned=tuned.tuned)
        return replace(self, per_dataset={**self.per_dataset, dataset: tuned})

    def fusion_for(self, dataset: str) -> FusionSpec | None:
        """The fusion this pipeline uses on ``dataset``: its own tuned setting if it has one, else ``[fusion]``."""
        override = self.per_dataset.get(dataset)
        return override.fusion if override is not None else self.fusion


def feeders(retriever: RetrieverSpec, retrievers: Sequence[RetrieverSpec]) -> tuple[str, ...]:
    """The retrievers whose tops a ``scores_top`` retriever scores: its ``candidates_from``, else every one of its
    pipeline's ``retrievers`` that searches the collection."""
    return retriever.candidates_from or tuple(spec.name for spec in retrievers if not spec.scores_top)


def counted_retrievers(retrievers: Sequence[RetrieverSpec], fusion: FusionSpec | None) -> tuple[RetrieverSpec, ...]:
    """The retrievers whose lists can change what ``fusion`` ranks first: those it weighs above 0, and the searching
    retrievers whose candidates a weighted ``scores_top`` retriever scores (its ``candidates_from``, else all).

    A weighted sum's term for a list at weight 0 is 0, and a document only such a list found scores every other
    list's floor (its minimum, or its unmatched score), never above a document another list found: leaving the list
    out keeps the top. RRF and a lone retriever keep them all (RRF ranks every list's documents).
    """
    if fusion is None or fusion.method != "weighted":
        return tuple(retrievers)
    weights = fusion.weight_vector([spec.name for spec in retrievers]).tolist()
    feeding = {
        name
        for spec, weight in zip(retrievers, weights, strict=True)
        if spec.scores_top and weight > 0
        for name in feeders(spec, retrievers)
    }
    return tuple(spec for spec, weight in zip(retrievers, weights, strict=True) if weight > 0 or spec.name in feeding)


def builtin_pipelines() -> dict[str, Path]:
    folder = resources.files("braid.pipelines") / "builtin"
    return {Path(str(entry)).stem: Path(str(entry)) for entry in folder.iterdir() if str(entry).endswith(".toml")}


def coerce(where: str, name: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise BraidError(f"{where}: {name} must be an integer, got {value!r}")
    if not isinstance(value, expected):
        raise BraidError(f"{where}: {name} must be {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _depth(where: str, raw: Mapping[str, Any], default: int) -> int:
    depth = coerce(where, "depth", raw.get("depth", default), int)
    if depth < 1:
        raise BraidError(f"{where}: depth must be >= 1, got {depth}")
    return depth


def parse_retriever(raw: Mapping[str, Any], where: str, cascade: bool = False) -> RetrieverSpec:
    if not isinstance(raw, Mapping):
        raise BraidError(f"{where}: must be a table")
    kinds = [name for name, info in RETRIEVER_KINDS.items() if info.can_score or not cascade]
    kind = raw.get("kind")
    if kind is None:
        raise BraidError(f"{where}: missing field 'kind' (allowed: {', '.join(kinds)})")
    if kind not in kinds:
        what = "cascade scorer" if cascade else "retriever"
        raise BraidError(f"{where}: unknown {what} kind {kind!r} (allowed: {', '.join(kinds)})")
    info = RETRIEVER_KINDS[kind]
    keys = CASCADE_KEYS if cascade else RETRIEVER_KEYS
    unknown = set(raw) - keys - set(info.params)
    if unknown:
        allowed = sorted(keys | set(info.params))
        raise BraidError(f"{where}: unknown field(s) {sorted(unknown)} for {kind} (allowed: {', '.join(allowed)})")
    params = {name: coerce(where, name, raw.get(name, p.default), p.type) for name, p in info.params.items()}
    name = coerce(where, "name", raw.get("name", kind), str)
    index = raw.get("index")
    if index is not None:
        index = coerce(where, "index", index, str)
    scores_top = coerce(where, "scores_top", raw.get("scores_top", 0), int)
    if scores_top < 0:
        raise BraidError(f"{where}: scores_top must be >= 0 (0: search the collection), got {scores_top}")
    if scores_top and not info.can_score:
        scorers = ", ".join(name for name, kind_info in RETRIEVER_KINDS.items() if kind_info.can_score)
        raise BraidError(f"{where}: scores_top needs a kind that scores documents (allowed: {scorers}), got {kind!r}")
    feeders = raw.get("candidates_from", [])
    if not isinstance(feeders, list) or not all(isinstance(item, str) for item in feeders):
        raise BraidError(f"{where}: candidates_from must be a list of retriever names, got {feeders!r}")
    return RetrieverSpec(
        kind=kind,
        params=params,
        depth=_depth(where, raw, 100 if cascade else DEFAULT_DEPTH),
        name=name,
        index=index,
        scores_top=scores_top,
        candidates_from=tuple(feeders),
    )


def parse_fusion(raw: Any, where: str) -> FusionSpec:
    if not isinstance(raw, Mapping):
        raise BraidError(f"{where}: must be a table")
    unknown = set(raw) - FUSION_KEYS
    if unknown:
        raise BraidError(f"{where}: unknown field(s) {sorted(unknown)} (allowed: {', '.join(sorted(FUSION_KEYS))})")
    method = coerce(where, "method", raw.get("method", "rrf"), str)
    if method not in METHODS:
        raise BraidError(f"{where}: method must be one of {', '.join(METHODS)}, got {method!r}")
    normalization = coerce(where, "normalization", raw.get("normalization", "minmax"), str)
    if normalization not in NORMALIZATIONS:
        raise BraidError(f"{where}: normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}")
    weights = raw.get("weights")
    if weights is not None:
        if not isinstance(weights, Mapping):
            raise BraidError(f"{where}: weights must be a table of retriever name = number")
        weights = {str(name): coerce(where, f"weights.{name}", value, float) for name, value in weights.items()}
    return FusionSpec(
        method=method, k=coerce(where, "k", raw.get("k", 60.0), float), normalization=normalization, weights=weights
    )


# Each [rerank] field takes the type of its default; layers is a TOML array of integers.
RERANK_TYPES: dict[str, type] = {f.name: list if f.name == "layers" else type(f.default) for f in fields(RerankSpec)}


def parse_rerank(raw: Any, source: str) -> RerankSpec:
    """A :class:`RerankSpec` from a pipeline file's ``[rerank]`` table; errors name ``source`` and the field."""
    where = f"{source}: [rerank]"
    if not isinstance(raw, Mapping):
        raise BraidError(f"{where}: must be a table")
    unknown = set(raw) - set(RERANK_TYPES)
    if unknown:
        allowed = ", ".join(sorted(RERANK_TYPES))
        raise BraidError(f"{where}: unknown field(s) {sorted(unknown)} (allowed: {allowed})")
    values = {name: coerce(where, name, value, RERANK_TYPES[name]) for name, value in raw.items()}
    if "layers" in values:
        layers = values["layers"]
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
            raise BraidError(f"{where}: layers must be a list of integers, got {layers!r}")
        values["layers"] = tuple(layers)
    try:
        return RerankSpec(**values)
    except BraidError as error:
        raise BraidError(f"{source}: {error}") from None


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
    fusion = parse_fusion(raw["fusion"], f"{source}: [fusion]") if "fusion" in raw else None
    cascade_raw = raw.get("cascade", [])
    if not isinstance(cascade_raw, list):
        raise BraidError(f"{source}: cascade must be a list of [[cascade]] tables")
    cascade = tuple(
        parse_retriever(item, f"{source}: cascade[{i}]", cascade=True) for i, item in enumerate(cascade_raw)
    )
    rerank = parse_rerank(raw["rerank"], source) if "rerank" in raw else None
    tuned = raw.get("tuned")
    if tuned is not None and not isinstance(tuned, Mapping):
        raise BraidError(f"{source}: tuned must be a table")
    per_dataset = parse_per_dataset(raw.get("per_dataset", {}), source)
    return PipelineSpec(
        name=name,
        retrievers=specs,
        fusion=fusion,
        cascade=cascade,
        description=str(raw.get("description", "")),
        tuned=dict(tuned) if tuned else None,
        rerank=rerank,
        per_dataset=per_dataset,
    )


def parse_per_dataset(raw: Any, source: str) -> dict[str, TunedFusion]:
    """``[per_dataset.<dataset>]`` tables: each a ``fusion`` table and an optional ``tuned`` provenance table."""
    if not isinstance(raw, Mapping):
        raise BraidError(f"{source}: per_dataset must be a table of [per_dataset.<dataset>] tables")
    parsed = {}
    for dataset, table in raw.items():
        where = f"{source}: [per_dataset.{dataset}]"
        if not isinstance(table, Mapping):
            raise BraidError(f"{where}: must be a table")
        unknown = set(table) - PER_DATASET_KEYS
        if unknown:
            allowed = ", ".join(sorted(PER_DATASET_KEYS))
            raise BraidError(f"{where}: unknown field(s) {sorted(unknown)} (allowed: {allowed})")
        if "fusion" not in table:
            raise BraidError(f"{where}: missing field 'fusion' (a table like [fusion])")
        tuned = table.get("tuned")
        if tuned is not None and not isinstance(tuned, Mapping):
            raise BraidError(f"{where}: tuned must be a table")
        parsed[str(dataset)] = TunedFusion(
            parse_fusion(table["fusion"], f"{where} fusion"), dict(tuned) if tuned else None
        )
    return parsed


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
    except (OSError, UnicodeDecodeError) as error:
        raise BraidError(f"{path}: cannot read the pipeline file: {error}") from None
    return parse_pipeline(raw, str(path))


def _retriever_table(spec: RetrieverSpec) -> dict[str, Any]:
    table: dict[str, Any] = {"name": spec.name, "kind": spec.kind, "depth": spec.depth}
    if spec.index is not None:
        table["index"] = spec.index
    if spec.scores_top:
        table["scores_top"] = spec.scores_top
    if spec.candidates_from:
        table["candidates_from"] = list(spec.candidates_from)
    return {**table, **spec.params}


def _fusion_table(spec: FusionSpec) -> dict[str, Any]:
    table = spec.to_dict()
    if spec.weights is None:  # no weights means 1.0 each; an empty table would name no retriever
        del table["weights"]
    return table


def pipeline_to_dict(spec: PipelineSpec) -> dict[str, Any]:
    """The TOML structure of a pipeline, as :func:`parse_pipeline` reads it."""
    data: dict[str, Any] = {"name": spec.name}
    if spec.description:
        data["description"] = spec.description
    data["retrievers"] = [_retriever_table(r) for r in spec.retrievers]
    if spec.fusion is not None:
        data["fusion"] = _fusion_table(spec.fusion)
    if spec.per_dataset:
        data["per_dataset"] = {
            name: {"fusion": _fusion_table(item.fusion), **({"tuned": dict(item.tuned)} if item.tuned else {})}
            for name, item in spec.per_dataset.items()
        }
    if spec.cascade:
        data["cascade"] = [_retriever_table(stage) for stage in spec.cascade]
    if spec.rerank is not None:
        data["rerank"] = spec.rerank.to_dict()
    if spec.tuned:
        data["tuned"] = dict(spec.tuned)
    return data


def save_pipeline(spec: PipelineSpec, path: Path, header: str = "") -> None:
    """Write the pipeline as TOML, atomically (a reader never sees half a file)."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    atomic_write_text(Path(path), comment + tomli_w.dumps(pipeline_to_dict(spec)))
