"""Joining a Ray cluster, or starting one on this machine, the one way every braid command does it."""

from __future__ import annotations

import os
from typing import Any

from braid.common.errors import BraidError

#: Ray binds every process of a local cluster to loopback only with "clusters" turned off.
CLUSTERS_OFF = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
#: How an operator reaches a local cluster with Ray's own CLI (``ray status``, ``ray list actors``): at its GCS
#: address (braid serve's ready record has it), with the token ``ray.init`` keeps in ~/.ray/auth_token.
RAY_CLI_ENV = {"RAY_AUTH_MODE": "token", **CLUSTERS_OFF}
#: Keeps Ray's crash handler from replacing the JVM's SIGSEGV handler (connect_ray says why).
NO_RAY_SIGNAL_HANDLER = "RAY_DISABLE_FAILURE_SIGNAL_HANDLER"


def connect_ray(address: str, cpus: int | None = None) -> Any:
    """The ``ray`` module, connected to the cluster at ``address``, or to one started here for ``local``.

    A local cluster listens on loopback only: every Ray process binds the node's address, 127.0.0.1, when Ray runs
    with clusters turned off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), a setting Ray reads once, on its first import,
    and hands to the processes it starts through the environment (so both are set here, whenever ray was imported).
    Its dashboard, on 127.0.0.1 too, serves the state API that ``ray list`` reads; token authentication (Ray's
    default) guards it. Workers run at normal priority, and their logs stay out of this process's output.
    """
    if address == "local":
        os.environ.update(CLUSTERS_OFF)
    # Ray starts its workers at nice 15; serving replicas at that priority lose the CPU to the broker that waits
    # on them. Workers of a cluster started here run at normal priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    # Ray's core worker installs its own SIGSEGV handler (absl's crash reporter) when it connects. In a process
    # where Lucene's JVM already runs, that replaces the JVM's handler, and HotSpot takes SIGSEGV on purpose (an
    # implicit null check in compiled code): the process then dies (rc 139 in a full test run, a null read in
    # JIT-compiled code; tests/common/test_ray_cluster.py shows which library holds the handler). Ray's handler
    # only prints a stack on a crash, so it is left off here and in the workers started from here (environment).
    os.environ.setdefault(NO_RAY_SIGNAL_HANDLER, "1")
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise BraidError("--ray needs the ray package: pip install 'ray[default]'") from None
    # Read when the worker connects, so this holds even if ray was imported before the variable was set (parsed as
    # Ray parses it).
    ray_constants.RAY_DISABLE_FAILURE_SIGNAL_HANDLER = os.environ[NO_RAY_SIGNAL_HANDLER].lower() in ("true", "1")
    if ray.is_initialized():
        return ray
    if address == "local":
        ray_constants.ENABLE_RAY_CLUSTER = False  # read at ray's first import, which may have come before this call
        ray.init(
            num_cpus=cpus or os.cpu_count() or 1,
            include_dashboard=True,
            dashboard_host="127.0.0.1",
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


def ray_cli_hint(ray: Any) -> str:
    """The command line that points Ray's own CLI at the cluster ``ray`` is connected to."""
    settings = " ".join(f"{name}={value}" for name, value in RAY_CLI_ENV.items())
    return f"{settings} ray status --address {ray.get_runtime_context().gcs_address}"
