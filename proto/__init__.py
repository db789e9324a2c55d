"""gRPC service definitions (braid.proto and generated stubs); not built yet."""
