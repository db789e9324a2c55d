"""The ``[rerank]`` stage of a pipeline: which LLM, how it scores, how deep, and its budgets.

Free of torch and transformers so that reading a pipeline file is instant (the table is parsed with the rest of
the file in :mod:`braid.pipelines.spec`); the model loads when the pipeline opens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from braid.common.errors import BraidError

MODES = ("first", "attention", "learned", "generate")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")  # auto: bfloat16 on CPUs that compute it natively
LONG_LISTS = ("sliding", "jointrank")
AGGREGATIONS = ("pagerank", "wins")  # how JointRank (ranker.joint_rank) merges block orders


@dataclass(frozen=True)
class RerankSpec:
    """Settings of the LLM reranking stage (see the README's ``[rerank]`` table for each field)."""

    model: str = "smollm2"
    mode: str = "first"
    depth: int = 20
    window: int = 20
    stride: int = 10
    #: lists longer than ``window``: sliding windows (``stride``, sequential) or JointRank (overlapping blocks,
    #: each document in ``replicas`` of them, all ranked in one walk, orders merged by ``aggregation``)
    long_lists: str = "sliding"
    replicas: int = 2
    aggregation: str = "pagerank"
    layers: tuple[int, ...] = ()
    probe_tokens: int = 8
    max_doc_tokens: int = 160
    max_query_tokens: int = 64
    max_prompt_tokens: int = 32768
    backend: str = "torch"
    cache_mb: int = 1024
    dtype: str = "auto"
    device: str = "auto"
    require_chat_template: bool = False
    #: learned mode: a score head file, or the name of a built-in one (empty: the built-in head of ``model``)
    head: str = ""
    #: the LLM's weight when its scores fuse with the first stage's (z-scores); 1: the LLM's order alone;
    #: -1: the score head's own weight in learned mode, no fusion in the other modes
    fusion_weight: float = -1.0

    def __post_init__(self) -> None:
        where = "[rerank]"
        if self.mode not in MODES:
            raise BraidError(f"{where}: mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.device not in DEVICES:
            raise BraidError(f"{where}: device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.long_lists not in LONG_LISTS:
            raise BraidError(f"{where}: long_lists must be one of {', '.join(LONG_LISTS)}, got {self.long_lists!r}")
        if self.aggregation not in AGGREGATIONS:
            raise BraidError(f"{where}: aggregation must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")
        if self.long_lists == "jointrank" and self.mode == "generate":
            raise BraidError(f"{where}: long_lists = 'jointrank' needs scores; mode 'generate' only permutes")
        if self.dtype not in DTYPES:
            raise BraidError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for name in (
            "depth",
            "window",
            "stride",
            "replicas",
            "max_doc_tokens",
            "max_query_tokens",
            "max_prompt_tokens",
        ):
            if getattr(self, name) < 1:
                raise BraidError(f"{where}: {name} must be >= 1, got {getattr(self, name)}")
        if self.window < 2:
            raise BraidError(f"{where}: window must be >= 2 documents, got {self.window}")
        if self.stride >= self.window:
            raise BraidError(f"{where}: stride ({self.stride}) must be smaller than window ({self.window})")
        if self.max_doc_tokens < 8:
            raise BraidError(
                f"{where}: max_doc_tokens must be >= 8 (the identifier needs some), got {self.max_doc_tokens}"
            )
        if self.probe_tokens < 1:
            raise BraidError(f"{where}: probe_tokens must be >= 1, got {self.probe_tokens}")
        if self.cache_mb < 0:
            raise BraidError(f"{where}: cache_mb must be >= 0, got {self.cache_mb}")
        if not (self.fusion_weight == -1.0 or 0.0 <= self.fusion_weight <= 1.0):
            raise BraidError(
                f"{where}: fusion_weight must be in [0, 1] (or -1: the head's own), got {self.fusion_weight}"
            )
        if self.head and self.mode != "learned":
            raise BraidError(f"{where}: head applies to mode = 'learned' only, not {self.mode!r}")
        if self.mode == "generate" and self.fusion_weight != -1.0:
            raise BraidError(f"{where}: fusion_weight needs scores; mode 'generate' only permutes")
        if any(layer < 0 for layer in self.layers):
            raise BraidError(f"{where}: layers must be >= 0, got {list(self.layers)}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data
