"""braid's front ends: the ``braid`` command line, and (later) the gRPC and HTTP servers over one core."""
