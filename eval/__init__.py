"""Offline evaluation, a consumer of the pipelines: run a pipeline over a split's judged queries (quality and
latency), paired significance tests, tables, JSON and TREC run files, and the quality/latency plot."""
