"""Step time with the real input pipeline against one batch kept in device memory.

PYTHONPATH=. python bench/input.py                        # demo baseline, prefetch 0 and 2
PYTHONPATH=. python bench/input.py --steps 50 --prefetch 0,2,4 --workers 2 --fast-compile

Builds a small synthetic world (`--pairs` train pairs, the demo's 64 x 64 images and 1-s clips)
in a temporary directory, builds the demo config's (`configs/demo.py`) baseline train step with
random variables of the right shapes and compiles it as the training loop does
(`loop.compile_train_step`). Then it times `--steps` steps (after `--warmup` untimed ones) fed
in three ways:

- `loader`: the host pipeline alone (`pipeline.train_iterator` + `parallel.to_global`, no
  step): the input rate a step has to stay under;
- `prefetch=N`: what the training loop does, `prefetch.DevicePrefetch` over a fresh
  `pipeline.train_iterator` with N batches made ahead (0: made on demand, no thread);
- `in-memory`: one global device batch reused for every step (no input cost at all).

Each prints ms per step (per batch for `loader`). Steps are dispatched without a host sync, as
in the loop, and timed until the last one finishes. A fast accelerator is fed when a prefetch
row equals the in-memory row; on a CPU the pipeline and the step share the same cores, so the
rows show the host's cost rather than overlap.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import tensorflow_datasets as tfds

from aiaic_jax.data import pipeline
from aiaic_jax.data.builders import synthetic
from aiaic_jax.models.aiaic import build_model
from aiaic_jax.train import loop, parallel, prefetch, stages
from aiaic_jax.train.steps import make_step
from configs import demo
from tests.tiny_training import random_variables

STAGE = "baseline"


def build_world(data_dir: str, config, pairs: int) -> None:
    """The demo's synthetic world with `pairs` train pairs (small splits elsewhere)."""
    options = {
        **config.data.builder_options.to_dict(),
        "train_pairs": pairs,
        "val_pairs": 8,
        "ave_like_videos": 2,
        "ood_pairs": 8,
    }
    builder_config = synthetic.SyntheticConfig(name=config.data.config_name, **options)
    synthetic.Synthetic(data_dir=data_dir, config=builder_config).build()


def time_steps(compiled, state, batches, rng, constants, warmup: int, steps: int):
    """(state, seconds per step) over `steps` steps after `warmup`; `batches` yields device
    batches."""
    for _ in range(warmup):
        state, metrics = compiled(state, next(batches), rng, constants)
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, next(batches), rng, constants)
    jax.block_until_ready(metrics)
    return state, (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each row")
    parser.add_argument("--prefetch", default="0,2", help="prefetch depths, comma-separated")
    parser.add_argument("--pairs", type=int, default=256, help="train pairs of the world")
    parser.add_argument("--batch", type=int, default=0, help="global batch; 0: the stage's")
    parser.add_argument("--workers", type=int, default=-1, help="grain workers; -1: config's")
    parser.add_argument(
        "--fast-compile", action="store_true", help="config.train.fast_compile for the step"
    )
    args = parser.parse_args()
    tfds.disable_progress_bar()

    config = demo.get_config()
    if args.batch:
        config.stages[STAGE].batch_size = args.batch
    if args.workers >= 0:
        config.data.num_workers = args.workers
    stage = stages.resolve(config, STAGE, train_size=args.pairs)
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    stage_step = make_step(config, stage, model, template["params"])
    mesh = parallel.make_mesh()
    state = jax.jit(stage_step.init_state, out_shardings=parallel.replicated(mesh))(
        random_variables(template), None
    )
    rng = parallel.replicate(loop.stage_rng(config, STAGE), mesh)
    constants = parallel.replicate(stage_step.constants(), mesh)

    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        build_world(scratch, config, args.pairs)
        print(f"world: {args.pairs} pairs built in {time.perf_counter() - started:.1f} s")
        data = {**config.data.to_dict(), "data_dir": scratch, "batch_size": stage.batch_size}

        in_memory = parallel.to_global(next(pipeline.train_iterator(data, seed=0)), mesh)
        started = time.perf_counter()
        compiled = loop.compile_train_step(
            stage_step, mesh, state, in_memory, rng, constants, fast=args.fast_compile
        )
        print(
            f"demo {STAGE}: batch {stage.batch_size}, {config.data.image_size} px, "
            f"{config.data.num_workers} grain workers, {jax.device_count()} "
            f"{jax.devices()[0].platform} device(s), compiled in "
            f"{time.perf_counter() - started:.1f} s, {args.steps} timed steps per row"
        )

        iterator = pipeline.train_iterator(data, seed=0)
        for _ in range(args.warmup):
            next(iterator)
        started = time.perf_counter()
        for _ in range(args.steps):
            jax.block_until_ready(parallel.to_global(next(iterator), mesh))
        loader = (time.perf_counter() - started) / args.steps
        if hasattr(iterator, "close"):
            iterator.close()  # stops grain's worker processes
        print(f"{'loader':>12}: {1000 * loader:8.1f} ms/batch (no step)")

        for depth in (int(d) for d in args.prefetch.split(",")):
            iterator = pipeline.train_iterator(data, seed=0)
            with prefetch.DevicePrefetch(iterator, mesh, depth) as batches:
                state, seconds = time_steps(
                    compiled, state, batches, rng, constants, args.warmup, args.steps
                )
            if hasattr(iterator, "close"):
                iterator.close()
            print(f"{f'prefetch={depth}':>12}: {1000 * seconds:8.1f} ms/step")

        def reused():
            while True:
                yield in_memory

        state, seconds = time_steps(
            compiled, state, reused(), rng, constants, args.warmup, args.steps
        )
        print(f"{'in-memory':>12}: {1000 * seconds:8.1f} ms/step")


if __name__ == "__main__":
    main()
