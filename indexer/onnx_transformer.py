"""Run the transformer inside a sentence-transformers model on OpenVINO or ONNX Runtime instead of eager PyTorch.

sentence-transformers' own ONNX and OpenVINO backends load through optimum, and no optimum release installable
here works with braid's transformers (optimum-onnx pins transformers<4.58). So braid does the same thing itself:
the Hugging Face model under the first module of a ``SentenceTransformer`` / ``SparseEncoder`` /
``MultiVectorEncoder`` is exported once with ``torch.onnx.export`` (dynamic batch and sequence axes, traced on a
padded batch so the attention mask stays in the graph), cached outside the repository, and swapped for an
:class:`OnnxTransformer` that runs the graph in ONNX Runtime (or an :class:`OpenVinoTransformer` that runs it on
OpenVINO). Tokenization, pooling, SPLADE's log-saturated max and normalization stay sentence-transformers' own
modules, so ONNX Runtime's outputs equal eager float32 to ~1e-6.

Runtimes (``$BRAID_ENCODER_RUNTIME``): ``openvino`` (the default on CPU: the same graph compiled by OpenVINO, bfloat16
matrix products where the CPU computes them natively, see :mod:`braid.indexer.openvino_transformer`), ``onnx``
(ONNX Runtime float32), ``onnx-int8`` (ONNX Runtime's dynamic int8 quantization of the weights, Jacob et al.,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018: it changes
the vectors, so indexes built with it get their own folder), and ``torch`` (eager PyTorch). OpenVINO's bfloat16
vectors stay at cosine ~0.99998 of float32, so its indexes share float32's folders. When a runtime is unavailable
(package missing, export, compile or session failure) the encoder falls back to ONNX Runtime float32, then to eager
PyTorch, and says so once on stderr: slower, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch

from braid.common.atomic_file import atomic_output
from braid.common.cache_dir import cache_root
from braid.common.errors import BraidError
from braid.indexer.graph_inputs import graph_feeds
from braid.indexer.graph_rows import rows_per_call, run_in_rows
from braid.indexer.openvino_transformer import OpenVinoTransformer, compile_graph

RUNTIMES = ("openvino", "onnx", "onnx-int8", "torch")
DEFAULT_RUNTIME = "openvino"
# Bumped when the export below changes, so stale cached graphs are never reused.
EXPORT_VERSION = 1
# Bumped when the quantization settings change: the int8 graph's file name carries it, since the folder's digest
# only covers the float32 graph it is made from.
QUANTIZATION_VERSION = 2
OPSET = 17


def encoder_runtime() -> str:
    """The runtime named by ``$BRAID_ENCODER_RUNTIME`` (default ``openvino``), validated."""
    runtime = os.environ.get("BRAID_ENCODER_RUNTIME", "").strip() or DEFAULT_RUNTIME
    if runtime not in RUNTIMES:
        raise BraidError(f"BRAID_ENCODER_RUNTIME={runtime!r} is not one of {', '.join(RUNTIMES)}")
    return runtime


def quantized(runtime: str) -> bool:
    """Whether ``runtime`` changes the encoder's outputs (and so needs indexes of its own)."""
    return runtime == "onnx-int8"


def onnx_cache_root() -> Path:
    return cache_root() / "onnx"


class OnnxTransformer(torch.nn.Module):
    """Stands in for a Hugging Face model inside a sentence-transformers ``Transformer`` module.

    ``forward`` takes the tokenizer's tensors and returns ``{output_name: tensor}``, which is all that module reads;
    ``config`` is the original model's, so dimension lookups keep working.
    """

    def __init__(self, session: Any, config: Any, input_names: list[str], output_name: str) -> None:
        super().__init__()
        self.session, self.config = session, config
        self.input_names, self.output_name = input_names, output_name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        feeds = graph_feeds(self.input_names, input_ids, attention_mask, kwargs)
        rows = rows_per_call(self.config, self.output_name, input_ids.shape[1])
        output = run_in_rows(lambda part: self.session.run([self.output_name], part)[0], feeds, rows)
        return {self.output_name: torch.from_numpy(output)}


class _Traced(torch.nn.Module):
    """Positional inputs in, the one output sentence-transformers reads out: the graph torch.onnx exports."""

    def __init__(self, model: torch.nn.Module, input_names: list[str], output_name: str) -> None:
        super().__init__()
        self.model, self.input_names, self.output_name = model, input_names, output_name

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.model(**dict(zip(self.input_names, inputs, strict=True)), return_dict=True)
        return outputs[self.output_name]


def _digest(model: torch.nn.Module, input_names: list[str], output_name: str) -> str:
    """Content key of the graph: the weights themselves (whatever folder or hub name they came from), the config,
    the interface and the exporter that made it."""
    hasher = hashlib.sha256()
    meta = {
        "config": model.config.to_json_string(use_diff=False),
        "inputs": input_names,
        "output": output_name,
        "export": EXPORT_VERSION,
        "torch": torch.__version__,
        "opset": OPSET,
    }
    hasher.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        hasher.update(name.encode())
        hasher.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()[:16]


def _export(model: torch.nn.Module, tokenizer: Any, input_names: list[str], output_name: str, path: Path) -> None:
    # Two texts of different lengths: the padded one keeps the attention-mask path in the traced graph.
    example = tokenizer(["a b", "a longer example text for the export"], padding=True, return_tensors="pt")
    inputs = tuple(example[name] for name in input_names)
    training = model.training
    try:
        with atomic_output(path, suffix=".onnx") as scratch, warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Traced(model.eval(), input_names, output_name).eval(),
                inputs,
                str(scratch),
                input_names=input_names,
                output_names=[output_name],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*input_names, output_name]},
                opset_version=OPSET,
                dynamo=False,
            )
    finally:
        model.train(training)


def _quantize(source: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel scales on the MatMul weights only: per-tensor scales, or quantized embedding tables, moved MiniLM's
    # embeddings to cosine 0.91-0.97 of float32 on test texts; this keeps them at 0.98-0.99.
    with atomic_output(path, suffix=".onnx") as scratch:
        quantize_dynamic(
            str(source), str(scratch), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True
        )


def onnx_graph(model: torch.nn.Module, tokenizer: Any, input_names: list[str], output_name: str, int8: bool) -> Path:
    """The cached ONNX file for ``model`` (exported, and quantized when ``int8``, on first use)."""
    folder = onnx_cache_root() / _digest(model, input_names, output_name)
    graph = folder / "model.onnx"
    if not graph.is_file():
        _export(model, tokenizer, input_names, output_name, graph)
    if not int8:
        return graph
    quantized_graph = folder / f"model.int8.v{QUANTIZATION_VERSION}.onnx"
    if not quantized_graph.is_file():
        _quantize(graph, quantized_graph)
    return quantized_graph


def use_onnx_runtime(st_model: Any, runtime: str | None = None) -> str:
    """Swap the transformer of ``st_model`` (a sentence-transformers model) for the exported graph on OpenVINO or
    ONNX Runtime when ``runtime`` (default: :func:`encoder_runtime`) asks for it; returns the runtime in effect."""
    runtime = encoder_runtime() if runtime is None else runtime
    if runtime not in RUNTIMES:
        raise BraidError(f"encoder runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if runtime == "torch" or st_model.device.type != "cpu":
        return "torch"
    transformer = st_model[0]
    model = getattr(transformer, "model", None)
    if isinstance(model, OnnxTransformer | OpenVinoTransformer):
        return runtime
    output = transformer.modality_config["text"]["method_output_name"]
    output_name = output if isinstance(output, str) else output[-1]
    accepted = transformer.tokenizer.model_input_names
    input_names = [name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted]
    # OpenVINO falls back to ONNX Runtime float32, which shares its index folders. int8 falls back to nothing: its
    # indexes are folders of int8 vectors, and float32 vectors written there would be mislabelled.
    for candidate in (runtime, "onnx") if runtime == "openvino" else (runtime,):
        try:
            graph = onnx_graph(model, transformer.tokenizer, input_names, output_name, quantized(candidate))
            transformer.model = _graph_runner(candidate, graph, model.config, input_names, output_name)
        except Exception as error:
            if quantized(candidate):
                raise BraidError(f"encoder runtime {candidate} unavailable ({type(error).__name__}: {error})") from None
            print(f"braid: encoder runtime {candidate} unavailable ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        if candidate != runtime:
            print(f"braid: encoder runs on {candidate} instead of {runtime}", file=sys.stderr)
        return candidate
    print("braid: encoder stays on eager PyTorch", file=sys.stderr)
    return "torch"


def _graph_runner(runtime: str, graph: Path, config: Any, input_names: list[str], output_name: str) -> torch.nn.Module:
    # Same thread budget as torch, so concurrent retrievers share the cores the way they did before. OpenVINO also
    # runs on fewer where a pipeline asks (braid.indexer.encoding_threads); ONNX Runtime, the fallback, does not.
    threads = torch.get_num_threads()
    if runtime == "openvino":
        return OpenVinoTransformer(partial(compile_graph, graph), threads, config, input_names, output_name)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No spin-waiting between ops: the hybrid's retrievers and a server's request threads share two cores, and a
    # spinning idle pool steals them from the Lucene and faiss work running beside it.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return OnnxTransformer(session, config, input_names, output_name)
