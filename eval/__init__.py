"""Offline evaluation: dataset loaders (BEIR and MS MARCO layouts), TREC runs, metrics and reports."""
