"""The orchestrator: pipeline definitions (TOML), pipelines opened over indexes (retrieve -> fuse -> cascade ->
rerank, with explanations and document updates), and fusion tuning on train/dev splits. Built-in pipelines ship
in ``builtin/``."""
