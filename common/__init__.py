"""braid's ground floor: errors, documents and datasets (BEIR and MS MARCO layouts, downloads), TREC run files,
relevance metrics, atomic file writes and where model weights come from. It imports no other braid package."""
