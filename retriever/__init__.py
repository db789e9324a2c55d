"""Retrievers over braid's indexes (the :class:`~braid.retriever.protocol.Retriever` protocol), the retriever kinds
pipelines name, deterministic tie-breaking, and score fusion (RRF, normalized weighted sums)."""
