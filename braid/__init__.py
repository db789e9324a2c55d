"""braid: hybrid retrieval and ranking, installed as one package.

The repository keeps one top-level folder per layer and maps each into this namespace (pyproject.toml's
``package-dir``): ``common/`` is :mod:`braid.common`, ``indexer/`` is :mod:`braid.indexer`, and so on. Layers, from
the ground floor up; each imports only those below it (import-linter contracts in pyproject.toml, checked in CI):

- :mod:`braid.common`: errors, documents and datasets, run files and metrics, atomic writes, model sources
- :mod:`braid.indexer`: index kinds and their builds (Lucene, embeddings, binary codes, multi-vector)
- :mod:`braid.retriever`: retrievers over those indexes, and fusion
- :mod:`braid.ranker`: the in-context LLM reranker; :mod:`braid.kernels` plugs GPU attention into it by
  registration (an entry point), never imported by it
- :mod:`braid.pipelines`: the orchestrator: pipeline files, retrieve -> fuse -> cascade -> rerank, fusion tuning
- :mod:`braid.eval` and :mod:`braid.service`: offline evaluation; the ``braid`` command and the gRPC/HTTP servers
"""

from pkgutil import extend_path

# Run from the root of a source checkout, this folder (which holds only the package root) is found first and would
# hide the installed package's layers; extend_path adds every other braid/ on sys.path (the installed one), so the
# benchmarks and tools run from the checkout against a plain `pip install .` too.
__path__ = extend_path(__path__, __name__)
