"""The LLM listwise reranker: BlockRank in-context ranking with FIRST or attention scoring, and a generation
baseline with full attention.

* ``first`` (Reddy et al., FIRST, 2024): one block-sparse forward over the whole window; the score of a
  document is the logit of its identifier as the first answer token.
* ``attention`` (Gupta et al., BlockRank, 2025): the attention mass that the query block's last
  ``probe_tokens`` tokens put on each document block, averaged over heads and over the chosen middle
  ``layers``; layers above the deepest scoring layer are never computed (early exit).
* ``learned``: a linear score head (:mod:`braid.ranker.score_head`), fitted on train qrels by ``braid train ranker
  --head``, over features of the frozen LM (:mod:`braid.ranker.attention_features`): per-layer, per-head attention
  masses, calibrated by a content-free query (ICR, Chen et al., 2025), FIRST's identifier log-probabilities, and
  query likelihood (UPR, :mod:`braid.ranker.query_likelihood`), which is what the built-in head reads.
* ``generate``: RankGPT-style permutation generation over the same text with ordinary causal attention and
  positions, for comparison (Sun et al., 2023).

Both block modes reuse document keys and values across queries through :class:`~braid.ranker.doc_cache.DocumentKVCache`.
Lists longer than ``window`` are ranked in sliding windows (:mod:`braid.ranker.sliding_window`) or, with
``long_lists = "jointrank"``, as overlapping blocks in one walk (:mod:`braid.ranker.joint_rank`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence

import torch

from braid.common.errors import BraidError, DeadlineExceeded
from braid.ranker.attention_backend import get_backend
from braid.ranker.attention_features import CALIBRATION_QUERY, FeatureLayout, window_features
from braid.ranker.block_forward import BlockForward
from braid.ranker.doc_cache import DocumentKVCache
from braid.ranker.identifiers import IdentifierScheme
from braid.ranker.joint_rank import block_design, joint_order
from braid.ranker.llm_source import LoadedLM, load_llm, resolve_dtype
from braid.ranker.prompt_layout import INSTRUCTION, QUESTION, BlockPrompt, PromptTemplate, build_prompt
from braid.ranker.query_likelihood import likelihood_prompts, query_log_likelihood
from braid.ranker.rerank_spec import RerankSpec
from braid.ranker.score_head import ScoreHead, resolve_head
from braid.ranker.sliding_window import sliding_rerank

log = logging.getLogger(__name__)

GENERATE_INSTRUCTION = (
    "You are a search engine. Below are passages, each marked with an identifier in square brackets, "
    "followed by a search query. Rank all passages by their relevance to the query, most relevant first."
)
GENERATE_QUESTION = "Rank the passages above, most relevant first, in the format [B] > [A] > [C]. Ranking:"


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BraidError("[rerank]: device = 'cuda' but no CUDA device is available (allowed: auto, cpu, cuda)")
    return device


class BlockRanker:
    """Reranks (doc_id, text) candidates for a query with a causal LM (see the module docstring)."""

    def __init__(self, spec: RerankSpec, lm: LoadedLM | None = None) -> None:
        self.spec = spec
        self.device = pick_device(spec.device)
        self.dtype = resolve_dtype(spec.dtype, self.device)  # the document KV cache's keys carry it (LoadedLM.key)
        self.lm = lm or load_llm(spec.model, self.dtype, self.device)
        tokenizer, config = self.lm.tokenizer, self.lm.model.config
        self.template = PromptTemplate.for_tokenizer(tokenizer, spec.require_chat_template)
        self.identifiers = IdentifierScheme.for_tokenizer(tokenizer).take(spec.window)
        self.num_layers = config.num_hidden_layers
        self.head: ScoreHead | None = None
        if spec.mode == "learned":
            self.head = self._load_head(config)
        self.layers = self.head.layout.layers if self.head else spec.layers or (self.num_layers // 2,)
        bad = [layer for layer in self.layers if layer >= self.num_layers]
        if bad:
            raise BraidError(f"[rerank]: layers {bad} out of range: the model has layers 0..{self.num_layers - 1}")
        self.cache = DocumentKVCache(spec.cache_mb << 20) if spec.cache_mb else None
        backend = get_backend(spec.backend)
        backend.check_device(self.device)
        self.forward = BlockForward(self.lm.model, backend, self.cache, self.lm.key)
        self._check_budget(config)
        # One model call at a time: torch already spreads one call over every core, and the cache's entries
        # are written after a forward completes.
        self._lock = threading.Lock()

    def _load_head(self, config: object) -> ScoreHead:
        head = resolve_head(self.spec.head, self.spec.model)
        heads, deepest = config.num_attention_heads, max(head.layout.layers, default=-1)
        if head.layout.reads_window and (head.layout.heads != heads or deepest >= self.num_layers):
            raise BraidError(
                f"[rerank]: the score head reads {head.layout.heads} heads at layers up to {deepest}, but the model "
                f"has {heads} heads and {self.num_layers} layers: it was fitted for another model "
                f"({head.model or 'unknown'})"
            )
        if head.model and head.model != self.spec.model:
            log.warning("the score head was fitted on %s's features, this ranker runs %s", head.model, self.spec.model)
        if head.max_doc_tokens and head.max_doc_tokens != self.spec.max_doc_tokens:
            log.warning(
                "the score head was fitted with max_doc_tokens = %d, this ranker cuts documents at %d",
                head.max_doc_tokens,
                self.spec.max_doc_tokens,
            )
        return head

    @property
    def pointwise(self) -> bool:
        """Whether each document's score is independent of the other candidates (a head reading no window)."""
        return self.head is not None and not self.head.layout.reads_window

    @property
    def fusion_weight(self) -> float | None:
        """The LLM's weight when its scores fuse with the first stage's (see ``RerankSpec.fusion_weight``); None:
        the LLM's order alone."""
        weight = self.spec.fusion_weight
        if weight == -1.0:
            weight = self.head.fusion_weight if self.head else 1.0
        return None if weight >= 1.0 else weight

    def _check_budget(self, config: object) -> None:
        probe = self.prompt(["x"], "x")
        worst = len(probe.instruction) + self.spec.window * self.spec.max_doc_tokens + len(probe.query)
        worst += self.spec.max_query_tokens
        if self.spec.mode == "generate":
            context = getattr(config, "max_position_embeddings", None) or 0
            if context and worst > context:
                raise BraidError(
                    f"[rerank]: a window of {self.spec.window} documents of up to {self.spec.max_doc_tokens} tokens "
                    f"needs up to {worst} tokens, more than the model's context of {context}; lower window or "
                    "max_doc_tokens"
                )
        elif worst > self.spec.max_prompt_tokens:
            raise BraidError(
                f"[rerank]: a window of {self.spec.window} documents of up to {self.spec.max_doc_tokens} tokens "
                f"needs up to {worst} tokens, more than max_prompt_tokens = {self.spec.max_prompt_tokens}; lower "
                "window or max_doc_tokens, or raise max_prompt_tokens"
            )

    def prompt(self, texts: Sequence[str], query: str) -> BlockPrompt:
        ids = self.identifiers.take(len(texts))
        generate = self.spec.mode == "generate"
        return build_prompt(
            self.lm.tokenizer,
            self.template,
            query,
            texts,
            ids.labels,
            ids.token_ids,
            self.spec.max_doc_tokens,
            self.spec.max_query_tokens,
            instruction=GENERATE_INSTRUCTION if generate else INSTRUCTION,
            question=GENERATE_QUESTION if generate else QUESTION,
        )

    # -- one window ----------------------------------------------------------------------------------------------

    def score_window(self, query: str, texts: Sequence[str]) -> list[float]:
        """Scores of one window's documents (block modes): FIRST logits or attention mass."""
        return self.score_windows([(query, texts)])[0]

    def score_windows(self, windows: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """Scores of several (query, window texts) at once: one forward walks the layers for all of them."""
        if self.head is not None:
            return [self.head.score(matrix).tolist() for matrix in self.window_features(windows, self.head.layout)]
        prompts = [self.prompt(texts, query) for query, texts in windows]
        with self._lock, torch.inference_mode():
            if self.spec.mode == "first":
                results = self.forward.run_many(prompts, need_logits=True)
                return [r.last_logits[list(p.label_token_ids)].tolist() for p, r in zip(prompts, results, strict=True)]
            results = self.forward.run_many(prompts, score_layers=self.layers, probe=self.spec.probe_tokens)
        scores = []
        for result in results:
            mass = torch.stack([result.doc_attention[layer] for layer in self.layers])
            scores.append(mass.mean(dim=(0, 1, 2)).tolist())
        return scores

    def window_features(
        self, windows: Sequence[tuple[str, Sequence[str]]], layout: FeatureLayout
    ) -> list[torch.Tensor]:
        """Each (query, texts) window's (documents x features) matrix under ``layout``: one walk through the layers
        for the listwise prompts (when the layout reads attention or FIRST), one per window for query likelihood."""
        # The listwise prompt is tokenized only for a layout that reads it (its walk, or its documents' lengths):
        # for a likelihood-only head (the built-in one) it was ~15 ms of a warm 20-document stage, unused.
        listwise = layout.reads_window or layout.length
        prompts = [self.prompt(texts, query) if listwise else None for query, texts in windows]
        results = twins = [None] * len(prompts)
        if layout.reads_window:
            # Each window's content-free twin goes into the same walk: it shares the window's documents, so only
            # its query block is extra work.
            calibration = []
            if layout.needs_calibration:
                calibration = [self.prompt(texts, CALIBRATION_QUERY) for _, texts in windows]
            with self._lock, torch.inference_mode():
                walked = self.forward.run_many(
                    [*prompts, *calibration], score_layers=layout.layers, probe=layout.probe, need_logits=layout.first
                )
            results = walked[: len(prompts)]
            twins = walked[len(prompts) :] if calibration else twins
        matrices = []
        for prompt, (query, texts), result, twin in zip(prompts, windows, results, twins, strict=True):
            labels = list(prompt.label_token_ids) if layout.first else []
            likelihood = self.query_likelihood(query, texts) if layout.likelihood else None
            matrices.append(
                window_features(
                    layout,
                    result.doc_attention if result else {},
                    prompt.doc_lengths if layout.length else (),
                    twin.doc_attention if twin else None,
                    result.last_logits[labels] if layout.first else None,
                    twin.last_logits[labels] if layout.first else None,
                    likelihood,
                )
            )
        return matrices

    def query_likelihood(self, query: str, texts: Sequence[str]) -> torch.Tensor:
        """Each document's mean log-probability of the query's tokens (:mod:`braid.ranker.query_likelihood`)."""
        prompts, query_tokens = likelihood_prompts(
            self.lm.tokenizer, self.template, query, texts, self.spec.max_doc_tokens, self.spec.max_query_tokens
        )
        with self._lock, torch.inference_mode():
            return query_log_likelihood(self.forward, self.lm.model.lm_head, prompts, query_tokens)

    def generate_window(self, query: str, texts: Sequence[str]) -> list[int]:
        """The generation baseline: a permutation of the window (indices, best first), full causal attention."""
        prompt = self.prompt(texts, query)
        ids = prompt.flat_ids()[None].to(self.device)
        with self._lock, torch.inference_mode():
            output = self.lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=4 * len(texts) + 4,
                do_sample=False,
                pad_token_id=self.lm.tokenizer.eos_token_id,
            )
        text = "[" + self.lm.tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True)
        return parse_permutation(text, prompt.labels)

    # -- a whole list ------------------------------------------------------------------------------------------

    def rerank(
        self, query: str, docs: Sequence[tuple[str, str]], deadline: float | None = None
    ) -> list[tuple[str, float]]:
        """(doc_id, score) best first. One window: the model's own scores (generate: rank-derived); several
        windows: rank-derived scores (count - rank), since scores from different prompts do not compare, except
        for a pointwise head (query likelihood: a document's score does not depend on the others), which scores
        the list in consecutive chunks of ``window`` and keeps its scores. ``deadline`` (a ``time.monotonic()``
        instant) is checked before each window."""
        if not query or not query.strip():
            raise BraidError("empty query: give some query text")
        texts = [text for _, text in docs]
        if self.pointwise:
            scores: list[float] = []
            for start in range(0, len(texts), self.spec.window):
                if deadline is not None and time.monotonic() >= deadline:
                    raise DeadlineExceeded("deadline exceeded while reranking")
                scores += self.score_window(query, texts[start : start + self.spec.window])
            order = sorted(range(len(docs)), key=lambda i: -scores[i])  # stable: ties keep the input order
            return [(docs[i][0], float(scores[i])) for i in order]
        if self.spec.long_lists == "jointrank" and len(docs) > self.spec.window:
            order = self._joint_rank(query, texts, deadline)
            return [(docs[i][0], float(len(order) - rank)) for rank, i in enumerate(order)]
        window_scores: dict[int, float] = {}

        def rank_window(items: Sequence[int]) -> list[int]:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("deadline exceeded while reranking")
            window_texts = [texts[i] for i in items]
            if self.spec.mode == "generate":
                return [items[j] for j in self.generate_window(query, window_texts)]
            scores = self.score_window(query, window_texts)
            window_scores.update(zip(items, scores, strict=True))
            ranked = sorted(range(len(items)), key=lambda j: -scores[j])
            return [items[j] for j in ranked]

        order = sliding_rerank(len(docs), self.spec.window, self.spec.stride, rank_window)
        if len(docs) <= self.spec.window and self.spec.mode != "generate":
            return [(docs[i][0], float(window_scores[i])) for i in order]
        return [(docs[i][0], float(len(order) - rank)) for rank, i in enumerate(order)]

    def _joint_rank(self, query: str, texts: Sequence[str], deadline: float | None) -> list[int]:
        """JointRank (:mod:`braid.ranker.joint_rank`): every block of the design scored in one walk."""
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("deadline exceeded while reranking")
        blocks = block_design(len(texts), self.spec.window, self.spec.replicas)
        scores = self.score_windows([(query, [texts[i] for i in block]) for block in blocks])
        rankings = [
            [block[j] for j in sorted(range(len(block)), key=lambda j: -values[j])]
            for block, values in zip(blocks, scores, strict=True)
        ]
        return joint_order(len(texts), rankings, self.spec.aggregation)

    def batchable(self, docs: Sequence[tuple[str, str]]) -> bool:
        """Whether a request is one block-mode window, which :meth:`rerank_many` scores together with others."""
        return self.spec.mode != "generate" and 0 < len(docs) <= self.spec.window

    def rerank_many(self, requests: Sequence[tuple[str, Sequence[tuple[str, str]]]]) -> list[list[tuple[str, float]]]:
        """:meth:`rerank` for several (query, docs) requests; single-window ones share one forward pass."""
        for query, _ in requests:
            if not query or not query.strip():
                raise BraidError("empty query: give some query text")
        together = [i for i, (_, docs) in enumerate(requests) if self.batchable(docs)]
        results: list[list[tuple[str, float]] | None] = [None] * len(requests)
        if together:
            scores = self.score_windows([(requests[i][0], [text for _, text in requests[i][1]]) for i in together])
            for i, values in zip(together, scores, strict=True):
                pairs = [(doc_id, float(value)) for (doc_id, _), value in zip(requests[i][1], values, strict=True)]
                # Stable on ties, as sliding_rerank's sort over one window.
                results[i] = sorted(pairs, key=lambda pair: -pair[1])
        for i, (query, docs) in enumerate(requests):
            if results[i] is None:
                results[i] = self.rerank(query, docs)
        return results


def parse_permutation(text: str, labels: Sequence[str]) -> list[int]:
    """Indices in the order the labels first appear in ``text``; labels never mentioned follow in input order."""
    position = {label: i for i, label in enumerate(labels)}
    seen: list[int] = []
    for label in re.findall(r"\[([A-Za-z]{1,2})\]", text):
        index = position.get(label)
        if index is not None and index not in seen:
            seen.append(index)
    return seen + [i for i in range(len(labels)) if i not in seen]


_SHARED: dict[RerankSpec, BlockRanker] = {}
_SHARED_LOCK = threading.Lock()


def shared_ranker(spec: RerankSpec) -> BlockRanker:
    """One ranker per distinct spec in a process (pipelines evaluated side by side share it); the LM weights are
    shared between specs that name the same model, dtype and device."""
    with _SHARED_LOCK:
        if spec not in _SHARED:
            device = pick_device(spec.device)
            lm = next(
                (
                    r.lm
                    for r in _SHARED.values()
                    if (r.spec.model, r.dtype, r.device) == (spec.model, resolve_dtype(spec.dtype, device), device)
                ),
                None,
            )
            _SHARED[spec] = BlockRanker(spec, lm)
        return _SHARED[spec]
