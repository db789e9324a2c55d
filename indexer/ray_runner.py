"""Shard tasks of a build job as Ray tasks (``braid index build --config ... --ray local|ADDRESS``).

Each shard is one task (one CPU, or a GPU share where asked) running :func:`braid.indexer.build_job.run_shard_task`, the
same function the in-process job runs, writing to the job folder, which every worker must see (a shared
filesystem on a real cluster); results are collected as they finish. ``local`` starts a Ray instance on this
machine that listens on loopback only; any other value is the address of an existing cluster, whose workers need
braid installed.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

from braid.common.errors import BraidError
from braid.indexer.build_job import ShardTask, run_shard_task


class RayRunner:
    def __init__(self, address: str, workers: int = 2, gpus_per_task: float = 0.0) -> None:
        # Must be set before ray is imported: its local cluster then binds to loopback only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise BraidError("--ray needs the ray package: pip install ray") from None
        self.ray = ray
        if address == "local":
            ray.init(
                num_cpus=workers,
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
        self.remote = ray.remote(num_cpus=1, num_gpus=gpus_per_task, max_retries=2)(run_shard_task)

    def __call__(self, tasks: list[ShardTask], kind: str) -> list[dict]:
        pending = [self.remote.remote(task) for task in tasks]
        records = []
        with tqdm(total=len(pending), desc=f"encode {kind} on ray", unit="shard", file=sys.stderr) as bar:
            while pending:
                done, pending = self.ray.wait(pending, num_returns=1)
                records.append(self.ray.get(done[0]))
                bar.update(1)
        return records

    def close(self) -> None:
        self.ray.shutdown()
