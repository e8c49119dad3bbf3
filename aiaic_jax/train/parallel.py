"""Data parallelism over every device of every process (DESIGN.md section 5).

One mesh with a `data` axis. The train step is `jax.jit` with the batch sharded `P('data')` and
the state replicated; each process feeds its own shard of the global batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts multi-process JAX when asked to, from arguments or the environment.

    Arguments win over the environment variables `AIAIC_COORDINATOR`, `AIAIC_NUM_PROCESSES` and
    `AIAIC_PROCESS_ID`. With none of them set, clusters that JAX detects by itself (SLURM, Cloud
    TPU pods, Open MPI) are initialised with `jax.distributed.initialize()` when
    `AIAIC_DISTRIBUTED=1`; otherwise this is a single-process run and nothing happens.
    """
    coordinator_address = coordinator_address or os.environ.get("AIAIC_COORDINATOR")
    if num_processes is None and "AIAIC_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["AIAIC_NUM_PROCESSES"])
    if process_id is None and "AIAIC_PROCESS_ID" in os.environ:
        process_id = int(os.environ["AIAIC_PROCESS_ID"])
    explicit = coordinator_address is not None
    if not explicit and os.environ.get("AIAIC_DISTRIBUTED") != "1":
        return
    # Cross-process collectives of the CPU backend go through gloo (other backends ignore it).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    else:
        jax.distributed.initialize()
    logging.info(
        "process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh() -> Mesh:
    """A one-axis mesh over all devices of all processes."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def per_process_batch_size(global_batch_size: int) -> int:
    """The share of one process; the global batch must split evenly over all devices."""
    devices = jax.device_count()
    if global_batch_size % devices:
        raise ValueError(
            f"batch size {global_batch_size} does not split over {devices} devices; "
            f"use a multiple of {devices}"
        )
    return global_batch_size // jax.process_count()


def to_global(local_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Assembles the global batch from each process's numpy shard; non-numeric entries (ids)
    stay on the host and are left out."""
    sharding = batch_sharded(mesh)
    return {
        key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
        for key, value in local_batch.items()
        if np.asarray(value).dtype.kind in "biuf"
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree on every device (the same value in every process)."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)
