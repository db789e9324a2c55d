"""LLM listwise reranking with block-sparse in-context attention (BlockRank, FIRST); not built yet."""
