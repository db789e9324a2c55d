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
