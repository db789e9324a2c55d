"""braid: hybrid retrieval and ranking, installed as one package.

The repository keeps one top-level folder per layer and maps each into this namespace (pyproject.toml's
``package-dir``): ``common/`` is :mod:`braid.common`, ``indexer/`` is :mod:`braid.indexer`, and so on. Layers, from
the ground floor up; each imports only those below it (import-linter contracts in pyproject.toml, checked in CI):

- :mod:`braid.common`: errors, documents and datasets (BEIR and MS MARCO layouts, downloads), TREC run files,
  relevance metrics, atomic file writes and where model weights come from. It imports no other braid package.
- :mod:`braid.indexer`: index kinds and their builds: Lucene inverted and impact indexes (BM25, SPLADE, SLIM),
  float embeddings and their binary codes (BEBR), token vectors and pooled multi-vector indexes; manifests, atomic
  and resumable writes, sharded build jobs on Ray. Each kind is one ``IndexKind`` beside its builder.
- :mod:`braid.retriever`: retrievers over those indexes (the ``Retriever`` protocol), the retriever kinds pipelines
  name, deterministic tie-breaking, and score fusion (RRF, normalized weighted sums).
- :mod:`braid.ranker`: LLM listwise reranking with block-sparse in-context attention (BlockRank layout; FIRST,
  attention and generate scoring), a document KV cache, early exit, sliding windows and BlockRank fine-tuning.
  Attention backends plug in by name (:mod:`braid.ranker.attention_backend`); the exact PyTorch one is built in.
- :mod:`braid.kernels`: GPU kernels (Triton) for BlockRank attention: prefix + causal attention over packed
  variable-length documents, split-K over long prefixes, per-document attention mass. Offered to the ranker as the
  ``triton`` backend through an entry point (never imported by it); runs on CUDA, or on CPU under
  ``TRITON_INTERPRET=1`` for tests.
- :mod:`braid.pipelines`: the orchestrator: pipeline definitions (TOML), pipelines opened over indexes (retrieve ->
  fuse -> cascade -> rerank, with explanations and document updates), fusion tuning on train/dev splits. Built-in
  pipelines ship in ``pipelines/builtin/``.
- :mod:`braid.eval`: offline evaluation, a consumer of the pipelines: a pipeline over a split's judged queries
  (quality and latency), paired significance tests, tables, JSON and TREC run files, the quality/latency plot.
- :mod:`braid.service`: the front ends over one core: the ``braid`` command line (:mod:`braid.service.cli`) and the
  gRPC and HTTP servers (auth, limits, admission, deadlines, metrics, hot reload).
- :mod:`braid.proto`: the braid.v1 gRPC API, ``braid/v1/braid.proto`` and its generated stubs
  (``scripts/gen_proto.sh``).

The layer folders hold no ``__init__.py``: each is a namespace portion (PEP 420) of its ``braid.*`` subpackage.
A process whose ``sys.path`` holds the repository root (pytest, ``python -m braid`` or a benchmark started there,
their subprocesses and Ray workers) could otherwise import ``kernels/`` or ``eval/`` as the top-level ``kernels``
or ``eval`` and hide the installed package of that name (Hugging Face's ``kernels``, which transformers imports).
The import system prefers any module or regular package on ``sys.path`` to a namespace portion, wherever each sits,
so these folders can never stand in for a third-party package (``tests/test_top_level_names.py``).
"""

from pkgutil import extend_path

# Run from the root of a source checkout, this folder (which holds only the package root) is found first and would
# hide the installed package's layers; extend_path adds every other braid/ on sys.path (the installed one, or the
# link tree of the development environment's editable install), where the layers are.
__path__ = extend_path(__path__, __name__)
