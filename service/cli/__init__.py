"""The ``braid`` command: one entry point, a module per subcommand."""
