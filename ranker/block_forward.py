"""The block-sparse forward pass of a decoder-only LM over a BlockRank prompt.

It walks the decoder layers itself (Llama, Qwen2 and Mistral share the block: RMSNorm, rotary q/k/v
projections with grouped-query heads, o_proj, RMSNorm, gated MLP) so that three things the layout allows are
exact and cheap:

* attention is computed block by block through an :class:`~ranker.attention_backend.AttentionBackend`, never
  with a quadratic mask;
* early exit: scoring by attention at layer l stops after layer l (layers above it cannot change it);
* the document KV cache: a cached document (or instruction) is not run through the layers at all; its keys and
  values at each layer are read from :class:`~ranker.doc_cache.DocumentKVCache`.

The reference it must equal is the same model's ordinary forward with the explicit block mask and the same
position ids (``tests/ranker/test_block_forward.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from braid.ranker.attention_backend import AttentionBackend
from braid.ranker.doc_cache import BlockKV, DocumentKVCache, block_key
from braid.ranker.prompt_layout import BlockPrompt
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


@dataclass
class BlockForwardResult:
    """What the scoring modes read from one forward.

    ``doc_attention[l]`` is the (H, probe, n) attention mass of the query block's last ``probe`` tokens on each
    document at layer l; ``last_logits`` the next-token logits after the prompt (full depth only); ``hidden``
    the final-norm hidden states of every token in sequence order (only when asked, and only cold).
    """

    doc_attention: dict[int, torch.Tensor]
    last_logits: torch.Tensor | None
    hidden: torch.Tensor | None
    layers_run: int
    cached_docs: int


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
    ) -> BlockForwardResult:
        return self.run_many([prompt], score_layers, probe, need_logits, return_hidden)[0]

    def run_many(
        self,
        prompts: Sequence[BlockPrompt],
        score_layers: Sequence[int] = (),
        probe: int = 0,
        need_logits: bool = False,
        return_hidden: bool = False,
    ) -> list[BlockForwardResult]:
        """Several prompts that share one instruction in a single walk through the layers (dynamic batching).

        The instruction block is computed once, the uncached documents of every prompt (each distinct document
        once) packed into one batch, and each query block then attends to its own prompt's blocks only, so every
        result equals that prompt's own forward.
        """
        if not prompts:
            return []
        if not score_layers and not need_logits:
            raise ValueError("nothing to compute: give score_layers or need_logits")
        if any(not 0 <= layer < self.num_layers for layer in score_layers):
            raise ValueError(f"score layers must be in 0..{self.num_layers - 1}, got {list(score_layers)}")
        if len({tuple(prompt.instruction) for prompt in prompts}) != 1:
            raise ValueError("prompts batched in one forward must share their instruction block")
        if return_hidden and len(prompts) != 1:
            raise ValueError("return_hidden takes a single prompt")
        depth = self.num_layers if need_logits or return_hidden else max(score_layers) + 1
        score_set = set(score_layers)
        instruction = prompts[0].instruction
        n_inst = len(instruction)

        # Which blocks come from the cache; the rest are computed (and cached afterwards). Documents are keyed by
        # their cache key, so one shared by several prompts is computed once; uncached runs key by position.
        use_cache = self.cache is not None and not return_hidden
        inst_key = block_key(self.model_key, instruction, None)
        inst_kv = self.cache.get(inst_key, depth) if use_cache else None
        doc_keys = [
            [block_key(self.model_key, instruction, doc) if use_cache else (j, i) for i, doc in enumerate(p.documents)]
            for j, p in enumerate(prompts)
        ]
        tokens_of = {}
        for p, keys in zip(prompts, doc_keys, strict=True):
            tokens_of.update(zip(keys, p.documents, strict=True))
        cached = {key: kv for key in tokens_of if use_cache and (kv := self.cache.get(key, depth))}
        todo = [key for key in tokens_of if key not in cached]
        row_of = {key: row for row, key in enumerate(todo)}
        lengths = [len(tokens_of[key]) for key in todo]
        if any(length == 0 for length in lengths):
            raise ValueError("a document block has no tokens")

        # Hidden states of the blocks to compute: instruction (1, Li); the uncached documents packed back to back
        # (1, T), no padding, each at positions n_inst.. (permutation-invariant); each query (1, Lq).
        h_inst = self._embed(torch.tensor([instruction])) if inst_kv is None else None
        starts = [0]
        for length in lengths:
            starts.append(starts[-1] + length)
        h_docs = None
        if todo:
            h_docs = self._embed(torch.tensor([[t for key in todo for t in tokens_of[key]]]))
        h_queries = [self._embed(torch.tensor([p.query])) for p in prompts]
        anchor = h_queries[0]  # rotary tables only read its dtype and device
        rot_inst = self._rotary(anchor, torch.arange(n_inst)[None]) if h_inst is not None else None
        rot_docs = None
        if todo:
            rot_docs = self._rotary(anchor, torch.cat([torch.arange(n_inst, n_inst + n) for n in lengths])[None])
        rot_queries = [
            self._rotary(anchor, torch.arange(p.query_start, p.query_start + len(p.query))[None]) for p in prompts
        ]
        bounds = [p.doc_bounds() for p in prompts]
        probes = [min(probe, len(p.query)) for p in prompts]

        def layer_step(
            index: int, h_inst: torch.Tensor | None, h_docs: torch.Tensor | None, *h_queries: torch.Tensor
        ) -> tuple:
            """One decoder layer over every block: new hidden states, scoring-layer masses, computed K/V."""
            layer = self.decoder.layers[index]
            inst_kv_new = docs_kv_new = None
            if h_inst is not None:
                q_i, k_i, v_i = self._qkv(layer, h_inst, rot_inst)
                k_i, v_i = k_i[0], v_i[0]
                inst_kv_new = (k_i, v_i)
                h_inst = self._finish(layer, h_inst, self.backend.instruction(q_i[0], k_i, v_i, self.scale)[None])
            else:
                k_i, v_i = inst_kv.keys[index], inst_kv.values[index]
            doc_k: dict[object, torch.Tensor] = {}
            doc_v: dict[object, torch.Tensor] = {}
            if h_docs is not None:
                q_d, k_d, v_d = self._qkv(layer, h_docs, rot_docs)
                k_d, v_d = k_d[0], v_d[0]
                docs_kv_new = (k_d, v_d)
                attended = self.backend.documents(q_d[0], k_i, v_i, k_d, v_d, lengths, self.scale)
                h_docs = self._finish(layer, h_docs, attended[None])
                for row, key in enumerate(todo):
                    own = slice(starts[row], starts[row + 1])
                    doc_k[key], doc_v[key] = k_d[:, own], v_d[:, own]
            for key, kv in cached.items():
                doc_k[key], doc_v[key] = kv.keys[index], kv.values[index]
            new_queries, masses = [], []
            for j, keys_j in enumerate(doc_keys):
                q_q, k_q, v_q = self._qkv(layer, h_queries[j], rot_queries[j])
                keys = torch.cat([k_i, *(doc_k[key] for key in keys_j), k_q[0]], dim=1)
                values = torch.cat([v_i, *(doc_v[key] for key in keys_j), v_q[0]], dim=1)
                attended, mass = self.backend.query(
                    q_q[0], keys, values, bounds[j], self.scale, probes[j] if index in score_set else 0
                )
                masses.append(mass)
                new_queries.append(self._finish(layer, h_queries[j], attended[None]))
            return h_inst, h_docs, tuple(new_queries), tuple(masses), inst_kv_new, docs_kv_new

        new_inst: list[tuple[torch.Tensor, torch.Tensor]] = []
        new_docs: list[tuple[torch.Tensor, torch.Tensor]] = []
        doc_attention: list[dict[int, torch.Tensor]] = [{} for _ in prompts]
        checkpointed = self.checkpoint and torch.is_grad_enabled()
        for index in range(depth):
            if checkpointed:  # recompute each layer in the backward pass instead of keeping its activations
                step = torch.utils.checkpoint.checkpoint(
                    layer_step, index, h_inst, h_docs, *h_queries, use_reentrant=False
                )
            else:
                step = layer_step(index, h_inst, h_docs, *h_queries)
            h_inst, h_docs, queries, masses, inst_kv_new, docs_kv_new = step
            h_queries = list(queries)
            for j, mass in enumerate(masses):
                if mass is not None:
                    doc_attention[j][index] = mass
            if use_cache:  # kept only to fill the cache: every layer's K/V of every computed block
                if inst_kv_new is not None:
                    new_inst.append(inst_kv_new)
                if docs_kv_new is not None:
                    new_docs.append(docs_kv_new)

        if use_cache:
            if h_inst is not None:
                self.cache.put(inst_key, _stack(new_inst, slice(None)))
            for row, key in enumerate(todo):
                self.cache.put(key, _stack(new_docs, slice(starts[row], starts[row + 1])))

        results = []
        norm = self.decoder.norm
        for j, h_query in enumerate(h_queries):
            last_logits = hidden = None
            if depth == self.num_layers:
                last_logits = self.model.lm_head(norm(h_query[:, -1:]))[0, -1].float()
                if return_hidden:
                    parts = [norm(h_inst[0])]
                    parts += [norm(h_docs[0, starts[row_of[key]] : starts[row_of[key] + 1]]) for key in doc_keys[j]]
                    parts.append(norm(h_query[0]))
                    hidden = torch.cat(parts)
            hits = sum(key in cached for key in doc_keys[j])
            results.append(BlockForwardResult(doc_attention[j], last_logits, hidden, depth, hits))
        return results


def _stack(per_layer: list[tuple[torch.Tensor, torch.Tensor]], tokens: slice) -> BlockKV:
    # torch.stack copies, so the entry does not keep the packed batch it was sliced from alive.
    keys = torch.stack([k[:, tokens] for k, _ in per_layer])
    values = torch.stack([v[:, tokens] for _, v in per_layer])
    return BlockKV(keys, values)
