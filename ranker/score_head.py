"""A linear score head over a frozen LM's in-context attention features, and its fit.

The features (:mod:`braid.ranker.attention_features`) come from forward passes only, so a head is learned on
a CPU in minutes where fine-tuning the LM is not: a document's score is ``w . standardize(features)``, fitted
with the listwise softmax cross-entropy of ListNet (Cao et al., "Learning to Rank: From Pairwise Approach to
Listwise Approach", ICML 2007; top-one probabilities, targets proportional to 2^grade - 1) plus an L2 penalty,
by L-BFGS over every training window at once. Probing which layers and heads of a frozen LM carry relevance is
the forward-only counterpart of BlockRank's attention loss (Gupta et al., 2025), which trains them to.

A head also carries how its scores fuse with the first stage's: ``fusion_weight`` is the LLM's weight in a
weighted sum of the two z-scored lists (:func:`braid.retriever.fusion.normalize`; 1 means the head's order
alone), chosen on the training windows by nDCG@10, since a 135M LM's order alone is weaker than a good first
stage's while the two disagree usefully. The whole head is one small JSON file: the layout, the standardization, the
weights, the fusion weight, and what made it (command, data, seed, metrics).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from braid.common.atomic_file import atomic_write_text
from braid.common.errors import BraidError
from braid.ranker.attention_features import FeatureLayout

FORMAT = "braid-score-head/1"
#: Heads that ship with braid, by name (``heads/<name>.json``); each records the command that made it.
BUILTIN_DIR = Path(__file__).with_name("heads")


@dataclass(frozen=True)
class TrainingWindow:
    """One judged window: its (n, F) features and the n documents' relevance grades."""

    features: torch.Tensor
    grades: torch.Tensor
    group: str = ""


@dataclass
class ScoreHead:
    """``score = weight . (features - mean) / std`` per document (see the module docstring)."""

    layout: FeatureLayout
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    fusion_weight: float = 1.0
    model: str = ""
    max_doc_tokens: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = self.layout.size
        for name in ("mean", "std", "weight"):
            if getattr(self, name).shape != (size,):
                raise BraidError(f"score head: {name} has shape {tuple(getattr(self, name).shape)}, expected ({size},)")
        if not 0.0 <= self.fusion_weight <= 1.0:
            raise BraidError(f"score head: fusion_weight must be in [0, 1], got {self.fusion_weight}")

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.float() - self.mean) / self.std) @ self.weight

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "layout": self.layout.to_dict(),
            "features": self.layout.names(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "weight": self.weight.tolist(),
            "fusion_weight": self.fusion_weight,
            "model": self.model,
            "max_doc_tokens": self.max_doc_tokens,
            "provenance": self.provenance,
        }

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ScoreHead:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise BraidError(f"score head {path} does not exist") from None
        except (OSError, ValueError) as exc:
            raise BraidError(f"score head {path} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BraidError(f"{path} is not a braid score head (format {FORMAT!r} expected)")
        try:
            return cls(
                layout=FeatureLayout.from_dict(data["layout"]),
                mean=torch.tensor(data["mean"], dtype=torch.float32),
                std=torch.tensor(data["std"], dtype=torch.float32),
                weight=torch.tensor(data["weight"], dtype=torch.float32),
                fusion_weight=float(data.get("fusion_weight", 1.0)),
                model=str(data.get("model", "")),
                max_doc_tokens=int(data.get("max_doc_tokens", 0)),
                provenance=dict(data.get("provenance", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BraidError(f"score head {path} is malformed: {exc}") from None


def listwise_loss(scores: torch.Tensor, grades: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ListNet top-one cross-entropy per window, averaged; (W, n) scores and grades, ``mask`` marks real slots."""
    gains = (torch.pow(2.0, grades) - 1.0) * mask
    target = gains / gains.sum(dim=1, keepdim=True)
    logp = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    return -(target * logp.masked_fill(~mask, 0.0)).sum(dim=1).mean()


def fit_head(
    windows: Sequence[TrainingWindow], layout: FeatureLayout, l2: float, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, std, weight) minimizing the mean listwise loss + ``l2`` * |w|^2 over windows with a relevant document.

    Deterministic: L-BFGS from zero weights over the whole (padded) batch of windows.
    """
    useful = [w for w in windows if bool((w.grades > 0).any())]
    if not useful:
        raise BraidError("no training window has a relevant document: nothing to fit the score head on")
    for window in useful:
        if window.features.shape[1] != layout.size:
            raise ValueError(f"features have {window.features.shape[1]} columns, the layout {layout.size}")
    stacked = torch.cat([w.features.float() for w in useful])
    mean, std = stacked.mean(dim=0), stacked.std(dim=0).clamp_min(1e-6)
    width = max(w.features.shape[0] for w in useful)
    x = torch.zeros(len(useful), width, layout.size)
    grades = torch.zeros(len(useful), width)
    mask = torch.zeros(len(useful), width, dtype=torch.bool)
    for row, window in enumerate(useful):
        n = window.features.shape[0]
        x[row, :n] = (window.features.float() - mean) / std
        grades[row, :n] = window.grades.float().clamp_min(0)
        mask[row, :n] = True
    weight = torch.zeros(layout.size, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = listwise_loss(x @ weight, grades, mask) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return mean, std, weight.detach()


def builtin_heads() -> list[str]:
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.json"))


def resolve_head(head: str, model: str) -> ScoreHead:
    """The head a ``[rerank]`` table names: a file, a built-in name, or (empty) the built-in head of ``model``."""
    name = head or model
    path = Path(name).expanduser()
    if path.is_dir():  # a `braid train ranker --head` output folder
        path = path / "head.json"
    if path.suffix == ".json" or path.is_file():
        return ScoreHead.load(path)
    if (BUILTIN_DIR / f"{name}.json").is_file():
        return ScoreHead.load(BUILTIN_DIR / f"{name}.json")
    available = ", ".join(builtin_heads()) or "none"
    what = f"head {head!r}" if head else f"model {model!r} has no built-in score head"
    raise BraidError(
        f"[rerank]: {what} (built-in heads: {available}); fit one with `braid train ranker --head ...` and set "
        "[rerank] head to its file"
    )
