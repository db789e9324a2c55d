"""The braid.v1 gRPC API: ``braid/v1/braid.proto`` and its generated stubs (``scripts/gen_proto.sh``)."""
