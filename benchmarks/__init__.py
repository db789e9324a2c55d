"""Benchmarks that reproduce the speed and quality figures quoted in issues and closing notes."""
