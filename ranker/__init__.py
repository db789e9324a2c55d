"""LLM listwise reranking with block-sparse in-context attention (BlockRank layout; FIRST, attention and generate
scoring), a document KV cache, early exit, sliding windows and BlockRank fine-tuning. Attention backends plug in
by name (:mod:`braid.ranker.attention_backend`); the exact PyTorch one is built in."""
