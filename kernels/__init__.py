"""GPU kernels (Triton) for BlockRank attention: prefix + causal attention over packed variable-length documents,
split-K over long prefixes, per-document attention mass. Offered to the ranker as the ``triton`` backend through an
entry point; runs on CUDA, or on CPU under ``TRITON_INTERPRET=1`` for tests."""
