"""Index kinds and their builds: Lucene inverted and impact indexes (BM25, SPLADE, SLIM), float embeddings and
their binary codes (BEBR), token vectors and pooled multi-vector indexes; manifests, atomic and resumable writes,
sharded build jobs on Ray. Each kind is one :class:`~braid.indexer.index_kind.IndexKind` beside its builder."""
