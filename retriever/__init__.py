"""Retrievers over braid's indexes and the pipelines that combine them."""
