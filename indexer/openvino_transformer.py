"""Run an encoder's exported ONNX graph on OpenVINO's CPU plugin instead of ONNX Runtime or eager PyTorch.

OpenVINO compiles the same graph braid exports for ONNX Runtime (:mod:`braid.indexer.onnx_transformer`) into
oneDNN kernels. On CPUs that compute bfloat16 natively (AVX512_BF16 or AMX) its CPU plugin runs the matrix products
in bfloat16 by default (its inference precision hint), accumulating in float32; elsewhere it runs float32. Measured
on a 2-core AVX512_BF16 machine: MiniLM documents at 3.3x eager PyTorch's throughput, vectors at cosine 0.99998
of float32 (ONNX Runtime float32: 1.4x).

One property braid needs that the plugin does not give by itself: a text's vector must not depend on the batch it
was encoded in (a sharded build equals a one-piece build byte for byte). The bfloat16 kernels round a partial block
of the sequence axis differently from a full one: measured on an AVX512_BF16 CPU, the same text encoded alone or
padded inside a batch came out up to 1.1e-3 apart; padded to any multiple of 16 positions it came out identical
(multiples of 8 did not). :class:`OpenVinoTransformer` therefore pads every batch to a multiple of
:data:`SEQUENCE_BLOCK` positions (masked, so attention never sees them) and cuts the output back.
``tests/indexer/test_onnx_transformer.py`` checks the property on the machine it runs on.

One hazard of OpenVINO's Python bindings: they set up their numpy support lazily, on the first array that crosses
them, behind a one-time guard that waits for the GIL while another thread can hold the GIL and wait for the guard.
Seen once here as a hung `braid eval` (the dense and SPLADE query encoders' first batches, side by side: one thread
in pybind11's ``gil_safe_call_once_and_store<npy_api>`` waiting for the GIL, the other in ``__cxa_guard_acquire``).
:func:`compile_graph` therefore passes one array through the bindings, under a lock, before any model is used.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from braid.indexer.encoding_threads import encoding_thread_budget
from braid.indexer.graph_inputs import graph_feeds
from braid.indexer.graph_rows import rows_per_call, run_in_rows

# Paddings that are multiples of this many positions give identical vectors (see the module docstring).
SEQUENCE_BLOCK = 16

_BINDINGS_LOCK = threading.Lock()
_bindings_ready = False


def _set_up_numpy_bindings(openvino: Any) -> None:
    """Make OpenVINO's bindings set up their numpy support now, in one thread (the race in the module docstring)."""
    global _bindings_ready
    with _BINDINGS_LOCK:
        if not _bindings_ready:
            # Both directions: an array into a tensor, and a tensor's memory viewed as an array (what infer does).
            openvino.Tensor(np.zeros((1, SEQUENCE_BLOCK), dtype=np.int64)).data[:] = 0
            _bindings_ready = True


def compile_graph(graph: Path, threads: int) -> Any:
    """``graph`` compiled for the CPU with ``threads`` inference threads (the plugin's default precision)."""
    import openvino

    _set_up_numpy_bindings(openvino)
    # No pinning of inference threads to cores: the hybrid encodes a query with MiniLM and SPLADE at once, beside
    # Lucene, and two models pinned to the same cores contend (hybrid p50 17.4-18.5 ms pinned, 13.4-15.2 unpinned,
    # 14.4 on ONNX Runtime, scifact on 2 cores).
    config = {"INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False}
    return openvino.Core().compile_model(str(graph), "CPU", config)


class OpenVinoTransformer(torch.nn.Module):
    """Stands in for a Hugging Face model inside a sentence-transformers ``Transformer`` module.

    ``forward`` takes the tokenizer's tensors and returns ``{output_name: tensor}``, which is all that module reads;
    ``config`` is the original model's, so dimension lookups keep working. An infer request is not safe to share
    between threads (a server's request threads encode queries concurrently), so each thread gets its own.
    ``compile(threads)`` compiles the graph for that many inference threads: ``threads`` of them by default, fewer
    where the calling thread's budget says so (:mod:`braid.indexer.encoding_threads`), each such copy compiled once,
    on first use.
    """

    def __init__(
        self, compile: Callable[[int], Any], threads: int, config: Any, input_names: list[str], output_name: str
    ) -> None:
        super().__init__()
        self.compile, self.threads, self.config = compile, threads, config
        self.input_names, self.output_name = input_names, output_name
        self._compiled = {threads: compile(threads)}
        self._compile_lock = threading.Lock()
        self._local = threading.local()

    def _request(self) -> Any:
        budget = encoding_thread_budget()
        threads = self.threads if budget is None else min(budget, self.threads)
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        request = requests.get(threads)
        if request is None:
            with self._compile_lock:
                if threads not in self._compiled:
                    self._compiled[threads] = self.compile(threads)
            request = requests[threads] = self._compiled[threads].create_infer_request()
        return request

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, kwargs)
        length = input_ids.shape[1]
        padded = -(-length // SEQUENCE_BLOCK) * SEQUENCE_BLOCK
        if padded > length:
            # Zeros are masked out: pad id, mask 0, segment 0.
            feeds = {name: np.pad(values, ((0, 0), (0, padded - length))) for name, values in feeds.items()}
        # infer copies its outputs out of the request's buffers (share_outputs=False), so no copy of our own. A few
        # texts per call keep the request's buffers small (braid.indexer.graph_rows).
        request = self._request()
        rows = rows_per_call(self.config, self.output_name, padded)
        output = run_in_rows(lambda part: request.infer(part)[0], feeds, rows)
        if padded > length and output.ndim >= 2 and output.shape[1] == padded:
            output = np.ascontiguousarray(output[:, :length])
        return {self.output_name: torch.from_numpy(output)}
