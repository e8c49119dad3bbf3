"""A few train steps of one stage of the tiny model on every device of every process.

Used by tests/test_parallel.py, in the test process (one device) and in subprocesses (forced
host devices, or several processes joined with `jax.distributed`):

python -m tests.parallel_worker --stages rnet,2 --steps 2 [--lr 1e-6] --out result.npz \
    [--coordinator_address localhost:1234 --num_processes 2 --process_id 0] \
    [--loop_stage rnet --loop_workdir W --data_dir D --init_from V]

Every process builds the same random variables and the same global batches and feeds its own
slice of each batch; process 0 writes the final params, batch statistics and metrics. With
--loop_stage, the processes then train that stage of the tiny config with the training loop
(`loop.run`), reading the dataset in D and starting from the variables in V.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import loop, parallel, stages
from aiaic_jax.train.steps import make_step
from tests.tiny_training import random_batch, random_variables, tiny_config

GLOBAL_BATCH = 4


def run_steps(
    stage_name: str, num_steps: int, mesh: jax.sharding.Mesh, lr: float = 0.0
) -> dict[str, np.ndarray]:
    """Params, batch_stats and metrics after `num_steps` steps, flattened by path.

    lr > 0 replaces the stage's learning rate.
    """
    config = tiny_config("unused")
    if lr > 0:
        config.stages[stages.stage_name(stage_name)].optimizer.lr = lr
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    stage = stages.resolve(config, stage_name, train_size=16)
    builder = make_step(config, stage, model, template["params"])
    variables = parallel.replicate(random_variables(template, seed=0), mesh)
    state = jax.jit(builder.init_state, out_shardings=parallel.replicated(mesh))(variables, None)
    rng = parallel.replicate(loop.stage_rng(config, stage.name), mesh)
    constants = parallel.replicate(builder.constants(), mesh)

    per_process = GLOBAL_BATCH // jax.process_count()
    rows = slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)

    def local_batch(step):
        return {k: v[rows] for k, v in random_batch(GLOBAL_BATCH, seed=step).items()}

    batch = parallel.to_global(local_batch(0), mesh)
    train_step = loop.compile_train_step(builder, mesh, state, batch, rng, constants, fast=True)
    out = {}
    for step in range(num_steps):
        state, metrics = train_step(
            state, parallel.to_global(local_batch(step), mesh), rng, constants
        )
        for name, value in jax.device_get(metrics).items():
            out[f"metrics/{step}/{name}"] = np.asarray(value)
    for collection in ("params", "batch_stats"):
        tree = jax.device_get(getattr(state, collection))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            key = "/".join(str(getattr(k, "key", k)) for k in path)
            out[f"{collection}/{key}"] = np.asarray(leaf)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stages", required=True, help="comma-separated, e.g. rnet,2")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    parser.add_argument("--loop_stage")
    parser.add_argument("--loop_workdir")
    parser.add_argument("--data_dir")
    parser.add_argument("--init_from")
    args = parser.parse_args()
    parallel.initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)
    mesh = parallel.make_mesh()
    result = {}
    for stage in args.stages.split(","):
        for key, value in run_steps(stage, args.steps, mesh, args.lr).items():
            result[f"{stage}/{key}"] = value
    if jax.process_index() == 0:
        np.savez(args.out, **result, devices=np.int32(jax.device_count()))
    if args.loop_stage:
        config = tiny_config(args.data_dir)
        config.init_from = args.init_from
        loop.run(config, args.loop_workdir, args.loop_stage)


if __name__ == "__main__":
    main()
