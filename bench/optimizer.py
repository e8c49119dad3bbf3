"""The optimiser's update alone, the fixed cost of every training step whatever the batch:
optax's AdamW on a backbone's parameters (jitted, state donated, as the training step applies
it) against PyTorch's AdamW (its default multi-tensor implementation, its default threads, as
bench/models.py runs it) on tensors of the same shapes, interleaved in one process.

    PYTHONPATH=. python bench/optimizer.py                      # DDColor-T
    PYTHONPATH=. python bench/optimizer.py --backbone ddcolor_large --rounds 10

Printed: the parameter count, each framework's median and best update time over the rounds,
and the memory traffic an update needs at least (read parameter, gradient and both moments,
write parameter and both moments: 28 bytes a float32 parameter) as GB/s at the median.
The official DDColor optimiser's settings: lr 1e-4, betas (0.9, 0.99), weight decay 0.01.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from aiaic_jax.models.backbones import get_backbone
from bench import models

_BYTES_PER_PARAMETER = 7 * 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ddcolor_tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    model = get_backbone(args.backbone)
    gray_l = jnp.zeros((1, args.size, args.size, 1), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), gray_l)["params"]
    values = models._random_variables(shapes)  # numpy arrays, bench/models.py's values
    arrays = jax.tree.leaves(values)
    count = sum(a.size for a in arrays)
    params = jax.tree.map(jnp.asarray, values)
    grads = jax.tree.map(lambda p: 0.1 * p, params)
    optimizer = optax.adamw(1e-4, b1=0.9, b2=0.99, weight_decay=0.01)

    def update(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(update, donate_argnums=(0, 1)).lower(params, optimizer.init(params), grads)
    step = step.compile()
    state = optimizer.init(params)

    def flax_round():
        nonlocal params, state
        params, state = step(params, state, grads)
        jax.block_until_ready(params)

    runs = {"optax": flax_round}
    try:
        import torch
    except ImportError:
        torch = None
        print("torch is not installed: optax alone")
    if torch is not None:
        tensors = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in arrays]
        for t in tensors:
            t.grad = 0.1 * t.detach().clone()
        torch_optimizer = torch.optim.AdamW(tensors, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01)
        runs["torch"] = torch_optimizer.step
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    for run in runs.values():  # warm-up: the first update builds the moments
        run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"{args.backbone}: {count / 1e6:.1f}M parameters in {len(arrays)} arrays")
    for name, values in times.items():
        median = statistics.median(values)
        rate = count * _BYTES_PER_PARAMETER / median / 1e9
        print(
            f"{name:6s} AdamW update: median {1e3 * median:.1f} ms, best {1e3 * min(values):.1f} "
            f"ms ({rate:.1f} GB/s of the least traffic)"
        )


if __name__ == "__main__":
    main()
