"""The BlockRank prompt: an instruction block, one block per candidate document, a query block.

Block-sparse attention (Gupta et al., "Scalable In-context Ranking with Generative Models", 2025): the
instruction attends causally to itself; each document block attends to the instruction and causally to itself,
never to another document; the query block attends to everything before it. Positions are permutation
invariant: every document block starts at the same position right after the instruction, and the query block
starts after the longest document. A document's keys and values therefore depend only on the instruction and on
the document itself, which is what makes the document KV cache exact.

The text of the blocks comes from the model's chat template when it has one: the template is rendered around a
placeholder, the part before the placeholder opens the instruction block and the part after it closes the query
block, so the prompt is exactly what the template would produce for one user turn plus the generation prompt.
A tokenizer without a chat template gets a plain-text layout (``Instruction / [A] ... / Query: ... Answer:``)
and a warning, so base models work too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from braid.common.errors import BraidError

log = logging.getLogger(__name__)

_PLACEHOLDER = "\u2063BRAID_BLOCKS\u2063"

INSTRUCTION = (
    "You are a search engine. Below are passages, each marked with an identifier in square brackets, "
    "followed by a search query. Answer with the identifier of the passage most relevant to the query."
)
QUESTION = "The identifier of the most relevant passage is:"


@dataclass(frozen=True)
class PromptTemplate:
    """Text around the blocks: ``head`` + instruction opens the prompt, ``tail`` closes it after the query."""

    head: str
    tail: str
    chat: bool

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, require_chat_template: bool = False) -> PromptTemplate:
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                [{"role": "user", "content": _PLACEHOLDER}], tokenize=False, add_generation_prompt=True
            )
            if rendered.count(_PLACEHOLDER) != 1:
                raise BraidError("the model's chat template does not place the user message once; cannot split it")
            head, tail = rendered.split(_PLACEHOLDER)
            return cls(head=head, tail=tail, chat=True)
        if require_chat_template:
            raise BraidError("the model's tokenizer has no chat template and require_chat_template is set")
        log.warning("tokenizer has no chat template: using the plain-text prompt layout")
        bos = getattr(tokenizer, "bos_token", None) or ""
        return cls(head=bos, tail="\nAnswer: ", chat=False)


@dataclass(frozen=True)
class BlockPrompt:
    """Token ids of one prompt, block by block, with the document identifiers' answer tokens.

    ``positions`` and ``sequence`` give the block-sparse layout; ``flat_ids`` is the same text as one ordinary
    causal prompt (what a dense full-attention forward over the same prompt reads).
    """

    instruction: tuple[int, ...]
    documents: tuple[tuple[int, ...], ...]
    query: tuple[int, ...]
    label_token_ids: tuple[int, ...]
    labels: tuple[str, ...]

    @property
    def doc_lengths(self) -> list[int]:
        return [len(doc) for doc in self.documents]

    @property
    def total_tokens(self) -> int:
        return len(self.instruction) + sum(self.doc_lengths) + len(self.query)

    @property
    def query_start(self) -> int:
        """First position id of the query block: right after the longest document."""
        return len(self.instruction) + max(self.doc_lengths, default=0)

    @property
    def span_positions(self) -> int:
        """Position ids used: instruction + longest document + query, whatever the number of documents."""
        return self.query_start + len(self.query)

    def doc_bounds(self) -> torch.Tensor:
        """(n, 2) [start, end) of each document in sequence order (the flat prompt)."""
        ends = torch.tensor([len(self.instruction), *self.doc_lengths]).cumsum(0)
        return torch.stack([ends[:-1], ends[1:]], dim=1)

    def flat_ids(self) -> torch.Tensor:
        ids = [*self.instruction, *(t for doc in self.documents for t in doc), *self.query]
        return torch.tensor(ids, dtype=torch.long)

    def position_ids(self) -> torch.Tensor:
        """Permutation-invariant positions in sequence order (instruction, documents, query)."""
        n_inst = len(self.instruction)
        parts = [torch.arange(n_inst)]
        parts += [torch.arange(n_inst, n_inst + len(doc)) for doc in self.documents]
        parts.append(torch.arange(self.query_start, self.query_start + len(self.query)))
        return torch.cat(parts)

    def segment_ids(self) -> torch.Tensor:
        """0 for the instruction, 1..n for documents, n + 1 for the query, in sequence order."""
        parts = [torch.zeros(len(self.instruction), dtype=torch.long)]
        parts += [torch.full((len(doc),), i + 1, dtype=torch.long) for i, doc in enumerate(self.documents)]
        parts.append(torch.full((len(self.query),), len(self.documents) + 1, dtype=torch.long))
        return torch.cat(parts)

    def allowed_mask(self) -> torch.Tensor:
        """The explicit (L, L) boolean mask of the block-sparse pattern; True where a token may attend.

        Only for references and tests: it is quadratic in the prompt, which the block-sparse path never is.
        """
        seg = self.segment_ids()
        n = len(self.documents)
        length = seg.numel()
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        row, col = seg[:, None], seg[None, :]
        same_block = row == col
        sees_instruction = col == 0
        query_row = row == n + 1
        return causal & (same_block | sees_instruction | query_row)


def passage_text(text: object) -> str:
    """A document as the prompts show it: whitespace runs folded to one space, an empty one as "(empty)"."""
    return " ".join(str(text).split()) or "(empty)"


def encode_texts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Each text's ids, without special tokens, from one tokenizer call for the whole window: a fast tokenizer
    encodes a batch in one pass through its Rust core (20 passages: half the time of 20 calls), with the same ids
    as one call per text."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []


def build_prompt(
    tokenizer: Any,
    template: PromptTemplate,
    query: str,
    documents: Sequence[str],
    labels: Sequence[str],
    label_token_ids: Sequence[int],
    max_doc_tokens: int,
    max_query_tokens: int = 64,
    instruction: str = INSTRUCTION,
    question: str = QUESTION,
) -> BlockPrompt:
    """Tokenize the blocks; each document is cut to ``max_doc_tokens`` (identifier included)."""
    if len(labels) < len(documents):
        raise BraidError(f"{len(documents)} documents but only {len(labels)} identifiers")
    if not query or not query.strip():
        raise BraidError("empty query: give some query text")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    inst_ids = encode(template.head + instruction + "\n\n")
    # An empty document still gets its identifier, so the model can rank it (last); it is not an error.
    bodies = [f"[{label}] {passage_text(text)}" for label, text in zip(labels, documents, strict=False)]
    newline = encode("\n")
    docs = [tuple(ids[: max_doc_tokens - 1] + newline) for ids in encode_texts(tokenizer, bodies)]
    query_text = " ".join(query.split())
    query_ids = encode("\nQuery: ")
    query_ids += encode(query_text)[:max_query_tokens]
    query_ids += encode("\n" + question + template.tail)
    # The answer is prefilled with the opening bracket, so the first generated token is the identifier itself
    # (FIRST reads its logits); encoded on its own so it is the same token as in the documents' "[A]".
    query_ids += encode("[")
    return BlockPrompt(
        instruction=tuple(inst_ids),
        documents=tuple(docs),
        query=tuple(query_ids),
        label_token_ids=tuple(label_token_ids[: len(documents)]),
        labels=tuple(labels[: len(documents)]),
    )
