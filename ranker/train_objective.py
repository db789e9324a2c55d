"""BlockRank's fine-tuning objective: language-model loss on the answer identifier plus a contrastive loss on the
query block's attention to the documents.

Gupta et al. ("Scalable In-context Ranking with Generative Models", 2025) train the LM to answer with the relevant
document's identifier (cross-entropy over the vocabulary at the first answer token, right after the prefilled
"["), and add an InfoNCE loss on the attention that the query block's last tokens put on each document at the
scoring layer: per head and query token the attention is renormalized over document tokens and summed per
document, averaged over heads and tokens, divided by a temperature (0.05) and contrasted with every positive in
the numerator. Total loss = LM loss + ``aux_weight`` (0.1) x attention loss. The attention loss is what makes
attention scoring (early exit at the scoring layer) rank well; the LM loss keeps FIRST scoring working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BlockRankLoss:
    """Loss settings; :meth:`__call__` gives (total, lm, attention) for one prompt."""

    aux_weight: float = 0.1
    temperature: float = 0.05

    def __post_init__(self) -> None:
        if self.aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {self.aux_weight}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def __call__(
        self,
        last_logits: torch.Tensor,
        doc_mass: torch.Tensor,
        positives: Sequence[int],
        label_token_ids: Sequence[int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``last_logits`` (vocab,) at the first answer token; ``doc_mass`` (H, probe, n) attention mass on each
        document at the scoring layer; ``positives`` indices of relevant documents (the first is the answer)."""
        if not positives:
            raise ValueError("a training prompt needs at least one relevant document")
        target = torch.tensor([label_token_ids[positives[0]]], device=last_logits.device)
        lm = F.cross_entropy(last_logits.float()[None], target)
        attention = attention_scores(doc_mass) / self.temperature
        index = torch.tensor(list(positives), device=attention.device)
        contrastive = torch.logsumexp(attention, 0) - torch.logsumexp(attention[index], 0)
        return lm + self.aux_weight * contrastive, lm.detach(), contrastive.detach()


def attention_scores(doc_mass: torch.Tensor) -> torch.Tensor:
    """(H, probe, n) mass -> (n,): renormalized over documents per head and token, then averaged."""
    mass = doc_mass.float()
    shares = mass / mass.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return shares.mean(dim=(0, 1))
