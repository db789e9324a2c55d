"""Joining a Ray cluster, or starting one on this machine, the one way every braid command does it."""

from __future__ import annotations

import os
from typing import Any

from braid.common.errors import BraidError


def connect_ray(address: str, cpus: int | None = None) -> Any:
    """The ``ray`` module, connected to the cluster at ``address``, or to one started here for ``local``.

    A local cluster listens on loopback only (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before ray is imported, and the
    node's address 127.0.0.1), runs no dashboard, runs workers at normal priority, and keeps workers' logs out of
    this process's output.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # Ray starts its workers at nice 15; serving replicas at that priority lose the CPU to the broker that waits
    # on them. Workers of a cluster started here run at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    try:
        import ray
    except ImportError:
        raise BraidError("--ray needs the ray package: pip install 'ray[serve]'") from None
    if ray.is_initialized():
        return ray
    if address == "local":
        ray.init(
            num_cpus=cpus or os.cpu_count() or 1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
            configure_logging=False,
        )
    else:
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise BraidError(f"cannot connect to the Ray cluster at {address}: {error}") from None
    return ray
