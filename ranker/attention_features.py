"""Per-document features of a window from the frozen LM: what a learned score head reads.

One block-sparse forward over a window gives, at every decoder layer and head, the attention mass that the query
block's last ``probe`` tokens put on each document block (BlockRank's scoring signal, Gupta et al. 2025), and at
full depth the logits of the document identifiers as the first answer token (FIRST, Reddy et al. 2024). Raw, both
are biased: a small LM puts attention on documents for their length, their slot and their wording whatever the
query asks. In-context reranking with calibration (ICR, Chen et al., "Attention in Large Language Models Yields
Efficient Zero-Shot Re-Rankers", 2025) removes that bias by subtracting what a content-free query ("N/A") puts on
each document: the calibration prompt has the same documents, so in one
:meth:`~braid.ranker.block_forward.BlockForward.run_many` walk it shares their keys and values and costs one more
query block, not another forward over the documents.

A head may also read each document's query likelihood (:mod:`braid.ranker.query_likelihood`), from a second set of
prompts. :class:`FeatureLayout` names which of these a head reads; :func:`window_features` turns one window's raw
tensors into the (documents x features) matrix. The same function serves training (``braid train ranker
--head``) and ranking, so the head sees at serving time exactly the features it was fitted on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from braid.common.errors import BraidError

#: The content-free query of the calibration prompt (ICR uses "N/A").
CALIBRATION_QUERY = "N/A"
#: Added before the log so that a document the probe tokens ignore entirely has a finite feature.
MASS_FLOOR = 1e-6


@dataclass(frozen=True)
class FeatureLayout:
    """Which features a score head reads, in this order:

    * ``attention``: log attention mass of the probe tokens on the document, per (layer, head) of ``layers``;
    * ``calibrated``: the same minus the content-free query's log mass (ICR), per (layer, head);
    * ``first``: the identifier's log-probability among the window's identifiers, and the same minus the
      content-free query's (needs the full depth: no early exit);
    * ``length``: log of the document block's token count (attention mass grows with length);
    * ``likelihood``: the mean log-probability of the query's tokens given the document (UPR; full depth).
    """

    layers: tuple[int, ...]
    heads: int
    probe: int = 8
    attention: bool = True
    calibrated: bool = True
    first: bool = False
    length: bool = True
    likelihood: bool = False

    def __post_init__(self) -> None:
        if (self.attention or self.calibrated) and not self.layers:
            raise BraidError("attention features need at least one layer")
        if any(layer < 0 for layer in self.layers) or len(set(self.layers)) != len(self.layers):
            raise BraidError(f"feature layers must be distinct and >= 0, got {list(self.layers)}")
        if self.heads < 1 or self.probe < 1:
            raise BraidError(f"heads and probe must be >= 1, got {self.heads} and {self.probe}")
        if not (self.attention or self.calibrated or self.first or self.length or self.likelihood):
            raise BraidError("a feature layout must read at least one feature")

    @property
    def size(self) -> int:
        per_layer = len(self.layers) * self.heads
        return per_layer * (self.attention + self.calibrated) + 2 * self.first + self.length + self.likelihood

    def names(self) -> list[str]:
        """One readable name per feature, in matrix column order (for reports and the head's file)."""
        names = []
        for prefix, wanted in (("attn", self.attention), ("calib", self.calibrated)):
            if wanted:
                names += [f"{prefix}.L{layer}.H{head}" for layer in self.layers for head in range(self.heads)]
        if self.first:
            names += ["first.logprob", "first.calibrated"]
        if self.length:
            names.append("log_length")
        if self.likelihood:
            names.append("query_likelihood")
        return names

    @property
    def reads_window(self) -> bool:
        """Whether the listwise BlockRank forward over the window is needed (attention, calibration, FIRST)."""
        return self.attention or self.calibrated or self.first

    @property
    def needs_calibration(self) -> bool:
        return self.calibrated or self.first

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureLayout:
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise BraidError(f"feature layout: unknown fields {unknown} (allowed: {', '.join(sorted(allowed))})")
        return cls(**{**data, "layers": tuple(data["layers"])})


def _log_mass(mass: Mapping[int, torch.Tensor], layers: Sequence[int]) -> torch.Tensor:
    """(layers x heads, n): log of the mass averaged over the probe tokens; ``mass[l]`` is (H, probe, n)."""
    stacked = torch.stack([mass[layer].float().mean(dim=1) for layer in layers])
    return torch.log(stacked + MASS_FLOOR).reshape(-1, stacked.shape[-1])


def window_features(
    layout: FeatureLayout,
    mass: Mapping[int, torch.Tensor],
    doc_lengths: Sequence[int],
    mass_cf: Mapping[int, torch.Tensor] | None = None,
    label_logits: torch.Tensor | None = None,
    label_logits_cf: torch.Tensor | None = None,
    likelihood: torch.Tensor | None = None,
) -> torch.Tensor:
    """The (n documents, ``layout.size``) feature matrix of one window.

    ``mass`` / ``mass_cf``: per layer, the (H, probe, n) attention mass of the query's / the content-free query's
    probe tokens; ``label_logits`` / ``label_logits_cf``: the n identifiers' first-token logits (``first`` only);
    ``likelihood``: the n documents' query log-likelihoods (``likelihood`` only).
    """
    parts: list[torch.Tensor] = []
    if layout.needs_calibration and mass_cf is None:
        raise ValueError("this layout reads calibrated features: give the content-free query's mass")
    if layout.attention or layout.calibrated:
        log_mass = _log_mass(mass, layout.layers)
        if layout.attention:
            parts.append(log_mass)
        if layout.calibrated:
            parts.append(log_mass - _log_mass(mass_cf, layout.layers))
    if layout.first:
        if label_logits is None or label_logits_cf is None:
            raise ValueError("this layout reads FIRST features: give both prompts' identifier logits")
        logprob = torch.log_softmax(label_logits.float(), dim=0)
        parts += [logprob[None], (logprob - torch.log_softmax(label_logits_cf.float(), dim=0))[None]]
    if layout.length:
        parts.append(torch.log(torch.tensor(list(doc_lengths), dtype=torch.float32))[None])
    if layout.likelihood:
        if likelihood is None:
            raise ValueError("this layout reads the query likelihood: give it")
        parts.append(likelihood.float()[None])
    return torch.cat(parts).T.contiguous()
