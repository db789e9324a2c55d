"""Query likelihood: how probable the LM finds the query as a question written about each document.

UPR (Sachan et al., "Improving Passage Retrieval with Zero-Shot Question Generation", EMNLP 2022) reranks a
first stage's passages by log P(query | "Passage: <text>. Please write a question based on this passage."),
averaged over the query's tokens: the LM reads the document and scores the query, instead of reading everything
and naming a document. On this collection mix it is the strongest signal SmolLM2-135M gives (see the built-in
head's provenance), where a small LM's listwise attention or identifier logits stay below BM25.

The prompts reuse the BlockRank machinery: each document is its own block after a shared instruction block
(the chat template's opening), ending with the request "Please write a question ..." and all but the last token
of the template's assistant opening, so that they are cached with the document; each document gets its own query
block (that last token + the query) that attends to the instruction and that document only. All the window's
prompts share one walk through the layers (:meth:`~braid.ranker.block_forward.BlockForward.run_many`), the
documents packed without padding, so the cost is one pass over the documents plus n short query blocks;
document keys and values come from the document KV cache when a document was seen before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from braid.common.errors import BraidError
from braid.ranker.block_forward import BlockForward
from braid.ranker.prompt_layout import BlockPrompt, PromptTemplate, encode_texts, passage_text

REQUEST = "Please write a question based on this passage."


def likelihood_prompts(
    tokenizer: Any,
    template: PromptTemplate,
    query: str,
    documents: Sequence[str],
    max_doc_tokens: int,
    max_query_tokens: int,
) -> tuple[list[BlockPrompt], int]:
    """One single-document prompt per document, and the number of query tokens each prompt ends with."""
    if not query or not query.strip():
        raise BraidError("empty query: give some query text")

    def encode(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)

    instruction = tuple(encode(template.head))
    if not instruction:  # a plain-text layout without BOS still needs a block the documents can attend to
        instruction = tuple(encode("\n"))
    tail = encode(template.tail)
    # The template's closing text (the assistant opening) depends on nothing but the document before it, so all
    # of it but its last token ends the document block, where the KV cache keeps it; the last token stays in the
    # query block, since its hidden state predicts the query's first token. Attention and positions are those of
    # the plain prompt either way: a warm query then runs only its own tokens (and one) per document.
    request = encode("\n" + REQUEST) + tail[:-1]
    query_ids = encode(" ".join(query.split()))[:max_query_tokens]
    query_block = tuple(tail[-1:] + query_ids)
    encoded = encode_texts(tokenizer, [f"Passage: {passage_text(text)}" for text in documents])
    # Each document is cut before the request is appended, so the request is never cut off.
    prompts = [
        BlockPrompt(instruction, (tuple(ids[:max_doc_tokens] + request),), query_block, (), ()) for ids in encoded
    ]
    return prompts, len(query_ids)


def query_log_likelihood(
    forward: BlockForward, lm_head: torch.nn.Module, prompts: Sequence[BlockPrompt], query_tokens: int
) -> torch.Tensor:
    """Mean log-probability of the query's tokens under each prompt's document: (n documents,) float32."""
    results = forward.run_many(prompts, query_states=True)
    # The hidden state before each query token predicts it: rows -query_tokens-1 .. -2 of each query block. All
    # prompts' rows go through the LM head in one call, which reads its vocabulary x width weights once, not per
    # document.
    states = torch.cat(
        [
            result.query_hidden[len(p.query) - query_tokens - 1 : len(p.query) - 1]
            for p, result in zip(prompts, results, strict=True)
        ]
    )
    logprobs = torch.log_softmax(lm_head(states).float(), dim=-1)
    targets = torch.tensor([t for p in prompts for t in p.query[len(p.query) - query_tokens :]], device=logprobs.device)
    return logprobs.gather(1, targets[:, None])[:, 0].view(len(prompts), query_tokens).mean(dim=1).cpu()
