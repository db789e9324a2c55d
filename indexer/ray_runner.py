"""Shard tasks of a build job as Ray tasks (``braid index build --config ... --ray local|ADDRESS``).

Each shard is one task (one CPU, or a GPU share where asked) running :func:`braid.indexer.build_job.run_shard_task`, the
same function the in-process job runs, writing to the job folder, which every worker must see (a shared
filesystem on a real cluster); results are collected as they finish. ``local`` starts a Ray instance on this
machine that listens on loopback only; any other value is the address of an existing cluster, whose workers need
braid installed.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from braid.common.ray_cluster import connect_ray
from braid.indexer.build_job import ShardTask, run_shard_task


class RayRunner:
    def __init__(self, address: str, workers: int = 2, gpus_per_task: float = 0.0) -> None:
        self.ray = ray = connect_ray(address, workers)
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
