"""Entry point of the ``braid`` console command.

User errors (:class:`BraidError`: bad input, missing data or index) print one line and exit with code 2, as
argparse does for bad arguments; a traceback means a bug in braid.

Quiet by default: braid's own progress bars and one summary line per step reach the console; the libraries'
model-loading bars, advisory warnings and INFO logs (Hugging Face, Lucene, Ray) do not, unless ``--verbose``
(anywhere on the command line).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

from braid.common.errors import BraidError
from braid.indexer.build_memory import BUDGET_ENV, memory_budget, parse_size
from braid.service.cli import collection_cmd, eval_cmd, index_cmd, query_cmd, search_cmd, serve_cmd, train_cmd, tune_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="braid", description="braid: hybrid retrieval and ranking")
    parser.add_argument(
        "--verbose", action="store_true", help="also the libraries' logs, warnings and model-loading bars"
    )
    commands = "{collection,index,search,eval,tune,train,serve,query}"
    subparsers = parser.add_subparsers(dest="command", required=True, metavar=commands)
    collection_cmd.register(subparsers)
    index_cmd.register(subparsers)
    search_cmd.register(subparsers)
    eval_cmd.register(subparsers)
    tune_cmd.register(subparsers)
    train_cmd.register(subparsers)
    serve_cmd.register(subparsers)
    query_cmd.register(subparsers)
    return parser


#: Libraries whose INFO logs are about their own workings (model loading, JVM, Ray), not the user's job.
NOISY_LOGGERS = ("transformers", "sentence_transformers", "huggingface_hub", "jnius", "ray", "openvino", "faiss")


def quiet_libraries(verbose: bool) -> None:
    """Keep library chatter off the console unless ``verbose`` (module docstring). Set before those libraries are
    imported: Hugging Face reads its progress-bar switch at import."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # "Loading weights" bars, one per model load
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Deprecation and advisory warnings raised inside libraries are for their developers; braid's own still show.
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", module="braid")


def apply_memory_budget(budget: str | None) -> None:
    """``--memory-budget``: checked now, then given to every build of this command (and its Ray workers, which
    inherit the environment) as ``$BRAID_MEMORY_BUDGET``."""
    if budget is None:
        memory_budget()  # a malformed $BRAID_MEMORY_BUDGET is refused before any work
        return
    os.environ[BUDGET_ENV] = str(parse_size(budget))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    quiet_libraries(verbose)
    parser = build_parser()
    # --verbose is the top-level parser's, but users put it after the command too.
    args = parser.parse_args(["--verbose", *(a for a in argv if a != "--verbose")] if verbose else argv)
    previous_budget = os.environ.get(BUDGET_ENV)
    try:
        apply_memory_budget(getattr(args, "memory_budget", None))
        return int(args.handler(args) or 0)
    except BraidError as error:
        print(f"braid: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("braid: interrupted", file=sys.stderr)
        return 130
    finally:
        # The budget is this command's (and its workers'), not the caller's when main() runs in a longer process.
        if previous_budget is None:
            os.environ.pop(BUDGET_ENV, None)
        else:
            os.environ[BUDGET_ENV] = previous_budget


if __name__ == "__main__":
    sys.exit(main())
