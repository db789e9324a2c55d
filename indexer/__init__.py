"""Index builders: Lucene (BM25, later impact indexes), binary and multi-vector indexes, with manifests."""
