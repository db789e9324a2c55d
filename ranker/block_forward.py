"""The block-sparse forward pass of a decoder-only LM over a BlockRank prompt.

It walks the decoder layers itself (Llama, Qwen2 and Mistral share the block: RMSNorm, rotary q/k/v
projections with grouped-query heads, o_proj, RMSNorm, gated MLP) so that three things the layout allows are
exact and cheap:

* attention is computed block by block through an :class:`~braid.ranker.attention_backend.AttentionBackend`, never
  with a quadratic mask;
* early exit: scoring by attention at layer l stops after layer l (layers above it cannot change it);
* the document KV cache: a cached document (or instruction) is not run through the layers at all; its keys and
  values at each layer are read from :class:`~braid.ranker.doc_cache.DocumentKVCache`.

The reference it must equal is the same model's ordinary forward with the explicit block mask and the same
position ids (``tests/ranker/test_block_forward.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from braid.ranker.attention_backend import AttentionBackend, grouped_attention
from braid.ranker.doc_cache import BlockKV, DocumentKVCache, block_key
from braid.ranker.prompt_layout import BlockPrompt


@dataclass
class BlockForwardResult:
    """What the scoring modes read from one forward.

    ``doc_attention[l]`` is the (H, probe, n) attention mass of the query block's last ``probe`` tokens on each
    document at layer l; ``last_logits`` the next-token logits after the prompt (full depth only); ``hidden``
    the final-norm hidden states of every token in sequence order (only when asked, and only cold);
    ``query_hidden`` the final-norm hidden states of the query block's tokens (only when asked).
    """

    doc_attention: dict[int, torch.Tensor]
    last_logits: torch.Tensor | None
    hidden: torch.Tensor | None
    layers_run: int
    cached_docs: int
    query_hidden: torch.Tensor | None = None


class BlockForward:
    """Runs a BlockRank prompt through a Hugging Face causal LM (Llama / Qwen2 / Mistral architecture)."""

    def __init__(
        self, model: torch.nn.Module, backend: AttentionBackend, cache: DocumentKVCache | None, model_key: str
    ) -> None:
        self.model = model
        self.decoder = model.model
        self.backend = backend
        self.cache = cache
        self.model_key = model_key
        config = model.config
        self.num_layers = config.num_hidden_layers
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        first = self.decoder.layers[0].self_attn
        self.head_dim = first.head_dim
        self.scale = first.scaling
        #: recompute each layer during backward (gradient checkpointing) when gradients are on
        self.checkpoint = False
        #: walks through the layers so far (one per run_many call): the "forwards per query" benchmarks report
        self.walks = 0

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_tokens.weight.device

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(ids.to(self.device))

    def _rotary(self, hidden: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decoder.rotary_emb(hidden, positions.to(self.device))

    def _qkv(
        self, layer: torch.nn.Module, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = layer.self_attn
        batch, length, _ = hidden.shape
        x = layer.input_layernorm(hidden)
        q = attn.q_proj(x).view(batch, length, self.heads, self.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(batch, length, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rotary)
        return q, k, v

    @staticmethod
    def _finish(layer: torch.nn.Module, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """o_proj + residual, then the MLP sublayer; ``attended`` is (B, H, L, D)."""
        batch, _, length, _ = attended.shape
        hidden = hidden + layer.self_attn.o_proj(attended.transpose(1, 2).reshape(batch, length, -1))
        return hidden + layer.mlp(layer.post_attention_layernorm(hidden))

    def __call__(
        self,
        prompt: BlockPrompt,
        score_layers: Sequence[int] = (),
        probe: int = 0,
        need_logits: bool = False,
        return_hidden: bool = False,
        query_states: bool = False,
    ) -> BlockForwardResult:
        return self.run_many([prompt], score_layers, probe, need_logits, return_hidden, query_states)[0]

    def run_many(
        self,
        prompts: Sequence[BlockPrompt],
        score_layers: Sequence[int] = (),
        probe: int = 0,
        need_logits: bool = False,
        return_hidden: bool = False,
        query_states: bool = False,
    ) -> list[BlockForwardResult]:
        """Several prompts that share one instruction in a single walk through the layers (dynamic batching).

        The instruction block is computed once, the uncached documents of every prompt (each distinct document
        once) packed into one batch, and each query block then attends to its own prompt's blocks only, so every
        result equals that prompt's own forward. ``query_states`` keeps each query block's final hidden states
        (what query-likelihood scoring reads the LM head over).
        """
        if not prompts:
            return []
        if not score_layers and not need_logits and not query_states:
            raise ValueError("nothing to compute: give score_layers, need_logits or query_states")
        if any(not 0 <= layer < self.num_layers for layer in score_layers):
            raise ValueError(f"score layers must be in 0..{self.num_layers - 1}, got {list(score_layers)}")
        if len({tuple(prompt.instruction) for prompt in prompts}) != 1:
            raise ValueError("prompts batched in one forward must share their instruction block")
        if return_hidden and len(prompts) != 1:
            raise ValueError("return_hidden takes a single prompt")
        depth = self.num_layers if need_logits or return_hidden or query_states else max(score_layers) + 1
        use_cache = self.cache is not None and not return_hidden
        run = _BatchRun(self, prompts, depth, set(score_layers), probe, use_cache)
        self.walks += 1
        run.walk()
        run.fill_cache()
        return run.results(need_logits, return_hidden, query_states)


class _BatchRun:
    """One :meth:`BlockForward.run_many` call: which blocks come from the cache, the hidden states of the blocks it
    computes, and the walk through the layers."""

    def __init__(
        self,
        forward: BlockForward,
        prompts: Sequence[BlockPrompt],
        depth: int,
        score_set: set[int],
        probe: int,
        use_cache: bool,
    ) -> None:
        self.f = forward
        self.depth = depth
        self.score_set = score_set
        self.use_cache = use_cache
        instruction = prompts[0].instruction
        n_inst = len(instruction)
        cache = forward.cache if use_cache else None
        # Which blocks come from the cache; the rest are computed (and cached afterwards). Documents are keyed by
        # their cache key, so one shared by several prompts is computed once; uncached runs key by position.
        self.inst_key = block_key(forward.model_key, instruction, None)
        self.inst_kv = cache.get(self.inst_key, depth) if cache is not None else None
        self.doc_keys = [
            [block_key(forward.model_key, instruction, doc) if use_cache else (j, i) for i, doc in enumerate(docs)]
            for j, docs in enumerate(p.documents for p in prompts)
        ]
        tokens_of = {}
        for p, keys in zip(prompts, self.doc_keys, strict=True):
            tokens_of.update(zip(keys, p.documents, strict=True))
        self.cached = {key: kv for key in tokens_of if cache is not None and (kv := cache.get(key, depth))}
        self.todo = [key for key in tokens_of if key not in self.cached]
        self.row_of = {key: row for row, key in enumerate(self.todo)}
        self.lengths = [len(tokens_of[key]) for key in self.todo]
        if any(length == 0 for length in self.lengths):
            raise ValueError("a document block has no tokens")

        # Hidden states of the blocks to compute: instruction (1, Li); the uncached documents packed back to back
        # (1, T), no padding, each at positions n_inst.. (permutation-invariant); each query (1, Lq).
        self.h_inst = forward._embed(torch.tensor([instruction])) if self.inst_kv is None else None
        self.starts = [0]
        for length in self.lengths:
            self.starts.append(self.starts[-1] + length)
        self.h_docs = None
        if self.todo:
            self.h_docs = forward._embed(torch.tensor([[t for key in self.todo for t in tokens_of[key]]]))
        self.h_queries = [forward._embed(torch.tensor([p.query])) for p in prompts]
        anchor = self.h_queries[0]  # rotary tables only read its dtype and device
        self.rot_inst = forward._rotary(anchor, torch.arange(n_inst)[None]) if self.h_inst is not None else None
        self.rot_docs = None
        if self.todo:
            positions = torch.cat([torch.arange(n_inst, n_inst + n) for n in self.lengths])[None]
            self.rot_docs = forward._rotary(anchor, positions)
        self.rot_queries = [
            forward._rotary(anchor, torch.arange(p.query_start, p.query_start + len(p.query))[None]) for p in prompts
        ]
        # Many prompts with query blocks of one length and no attention to read (query likelihood: one prompt per
        # document) run their query blocks as one padded batch: per-prompt calls were most of such a walk's time.
        self.together = len(prompts) > 1 and not score_set and len({len(p.query) for p in prompts}) == 1
        self.rot_together = None
        if self.together:
            positions = torch.stack([torch.arange(p.query_start, p.query_start + len(p.query)) for p in prompts])
            self.rot_together = forward._rotary(anchor, positions)
            # Each row's context (instruction, then its documents) is padded to the longest; the mask is the same
            # at every layer, so it is built once.
            ends = [n_inst + sum(len(doc) for doc in p.documents) for p in prompts]
            self.width, length, device = max(ends), len(prompts[0].query), anchor.device
            self.allowed = torch.zeros(len(prompts), length, self.width + length, dtype=torch.bool, device=device)
            for row, end in enumerate(ends):
                self.allowed[row, :, :end] = True
            self.allowed[:, :, self.width :] = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        self.bounds = [p.doc_bounds() for p in prompts]
        self.probes = [min(probe, len(p.query)) for p in prompts]
        self.doc_attention: list[dict[int, torch.Tensor]] = [{} for _ in prompts]
        self.new_inst: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.new_docs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def layer_step(
        self, index: int, h_inst: torch.Tensor | None, h_docs: torch.Tensor | None, *h_queries: torch.Tensor
    ) -> tuple:
        """One decoder layer over every block: new hidden states, scoring-layer masses, computed K/V.

        A pure function of its tensor arguments (the rest is fixed for the run), so that gradient checkpointing can
        recompute it in the backward pass.
        """
        f = self.f
        layer = f.decoder.layers[index]
        inst_kv_new = docs_kv_new = None
        if h_inst is not None:
            q_i, k_i, v_i = f._qkv(layer, h_inst, self.rot_inst)
            k_i, v_i = k_i[0], v_i[0]
            inst_kv_new = (k_i, v_i)
            h_inst = f._finish(layer, h_inst, f.backend.instruction(q_i[0], k_i, v_i, f.scale)[None])
        else:
            k_i, v_i = self.inst_kv.keys[index], self.inst_kv.values[index]
        doc_k: dict[object, torch.Tensor] = {}
        doc_v: dict[object, torch.Tensor] = {}
        if h_docs is not None:
            q_d, k_d, v_d = f._qkv(layer, h_docs, self.rot_docs)
            k_d, v_d = k_d[0], v_d[0]
            docs_kv_new = (k_d, v_d)
            attended = f.backend.documents(q_d[0], k_i, v_i, k_d, v_d, self.lengths, f.scale)
            h_docs = f._finish(layer, h_docs, attended[None])
            for row, key in enumerate(self.todo):
                own = slice(self.starts[row], self.starts[row + 1])
                doc_k[key], doc_v[key] = k_d[:, own], v_d[:, own]
        for key, kv in self.cached.items():
            doc_k[key], doc_v[key] = kv.keys[index], kv.values[index]
        if self.together:
            new_queries = self._queries_together(layer, k_i, v_i, doc_k, doc_v, h_queries)
            return h_inst, h_docs, new_queries, (None,) * len(new_queries), inst_kv_new, docs_kv_new
        new_queries, masses = [], []
        for j, keys_j in enumerate(self.doc_keys):
            q_q, k_q, v_q = f._qkv(layer, h_queries[j], self.rot_queries[j])
            keys = torch.cat([k_i, *(doc_k[key] for key in keys_j), k_q[0]], dim=1)
            values = torch.cat([v_i, *(doc_v[key] for key in keys_j), v_q[0]], dim=1)
            probe = self.probes[j] if index in self.score_set else 0
            attended, mass = f.backend.query(q_q[0], keys, values, self.bounds[j], f.scale, probe)
            masses.append(mass)
            new_queries.append(f._finish(layer, h_queries[j], attended[None]))
        return h_inst, h_docs, tuple(new_queries), tuple(masses), inst_kv_new, docs_kv_new

    def _queries_together(
        self,
        layer: torch.nn.Module,
        k_i: torch.Tensor,
        v_i: torch.Tensor,
        doc_k: dict[object, torch.Tensor],
        doc_v: dict[object, torch.Tensor],
        h_queries: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        """Every prompt's query block through one layer as one batch; each row attends to its own prompt's
        instruction and documents (padded to the longest context, masked) and causally to itself."""
        f = self.f
        hidden = torch.cat(list(h_queries), dim=0)
        q, k, v = f._qkv(layer, hidden, self.rot_together)
        batch, kv_heads, length, dim = k.shape
        # Every block is copied straight into its row of the padded batch (the instruction once, for all rows):
        # no per-prompt concatenation first, which copied each cached document twice per layer.
        keys = k.new_zeros(batch, kv_heads, self.width + length, dim)
        values = v.new_zeros(batch, kv_heads, self.width + length, dim)
        n_inst = k_i.shape[1]
        keys[:, :, :n_inst] = k_i
        values[:, :, :n_inst] = v_i
        for row, block_keys in enumerate(self.doc_keys):
            start = n_inst
            for key in block_keys:
                end = start + doc_k[key].shape[1]
                keys[row, :, start:end] = doc_k[key]
                values[row, :, start:end] = doc_v[key]
                start = end
        keys[:, :, self.width :] = k
        values[:, :, self.width :] = v
        attended, _ = grouped_attention(q, keys, values, self.allowed, f.scale)
        return tuple(f._finish(layer, hidden, attended).split(1, dim=0))

    def walk(self) -> None:
        """Run the layers up to the depth asked for, keeping scoring masses and (to fill the cache) computed K/V."""
        checkpointed = self.f.checkpoint and torch.is_grad_enabled()
        for index in range(self.depth):
            if checkpointed:  # recompute each layer in the backward pass instead of keeping its activations
                step = torch.utils.checkpoint.checkpoint(
                    self.layer_step, index, self.h_inst, self.h_docs, *self.h_queries, use_reentrant=False
                )
            else:
                step = self.layer_step(index, self.h_inst, self.h_docs, *self.h_queries)
            self.h_inst, self.h_docs, queries, masses, inst_kv_new, docs_kv_new = step
            self.h_queries = list(queries)
            for j, mass in enumerate(masses):
                if mass is not None:
                    self.doc_attention[j][index] = mass
            if self.use_cache:  # kept only to fill the cache: every layer's K/V of every computed block
                if inst_kv_new is not None:
                    self.new_inst.append(inst_kv_new)
                if docs_kv_new is not None:
                    self.new_docs.append(docs_kv_new)

    def fill_cache(self) -> None:
        if not self.use_cache:
            return
        if self.h_inst is not None:
            self.f.cache.put(self.inst_key, _stack(self.new_inst, slice(None)))
        for row, key in enumerate(self.todo):
            self.f.cache.put(key, _stack(self.new_docs, slice(self.starts[row], self.starts[row + 1])))

    def results(self, need_logits: bool, return_hidden: bool, query_states: bool = False) -> list[BlockForwardResult]:
        results = []
        norm = self.f.decoder.norm
        for j, h_query in enumerate(self.h_queries):
            last_logits = hidden = query_hidden = None
            if self.depth == self.f.num_layers:
                if need_logits:  # the LM head streams its vocabulary x width weights once per call: only on request
                    last_logits = self.f.model.lm_head(norm(h_query[:, -1:]))[0, -1].float()
                if query_states:
                    query_hidden = norm(h_query[0])
                if return_hidden:
                    parts = [norm(self.h_inst[0])]
                    parts += [self._doc_hidden(key, norm) for key in self.doc_keys[j]]
                    parts.append(norm(h_query[0]))
                    hidden = torch.cat(parts)
            hits = sum(key in self.cached for key in self.doc_keys[j])
            results.append(
                BlockForwardResult(self.doc_attention[j], last_logits, hidden, self.depth, hits, query_hidden)
            )
        return results

    def _doc_hidden(self, key: object, norm: torch.nn.Module) -> torch.Tensor:
        row = self.row_of[key]
        return norm(self.h_docs[0, self.starts[row] : self.starts[row + 1]])


def _stack(per_layer: list[tuple[torch.Tensor, torch.Tensor]], tokens: slice) -> BlockKV:
    # torch.stack copies, so the entry does not keep the packed batch it was sliced from alive.
    keys = torch.stack([k[:, tokens] for k, _ in per_layer])
    values = torch.stack([v[:, tokens] for _, v in per_layer])
    return BlockKV(keys, values)
