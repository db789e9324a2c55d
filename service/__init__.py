"""braid's front ends over one core: the ``braid`` command line (:mod:`braid.service.cli`) and the gRPC and HTTP
servers (auth, limits, admission, deadlines, metrics, hot reload)."""
