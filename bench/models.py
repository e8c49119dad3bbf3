"""Speed, cost and memory of the backbones: forward and an L1/AdamW training step.

    PYTHONPATH=. python bench/models.py                      # DDColor-T 256 bs 1, 4; demo 64 bs 16
    PYTHONPATH=. python bench/models.py --only ddcolor_tiny:256:1 --steps 5
    PYTHONPATH=. python bench/models.py --official_src /path/to/DDColor   # + PyTorch reference

Every configuration runs in its own process, so that its peak resident memory (max RSS) is its
own. Reported per configuration and mode (forward in evaluation mode; training step = forward
in training mode, L1 loss on ab, gradients, AdamW with the official DDColor settings, updated
BatchNorm/spectral-norm state): compile time, images/s from the median step time and from the
fastest step (`best`), GFLOP per image from XLA's cost analysis of the compiled program, XLA's
own memory estimate (arguments + outputs + temporaries) and the process max RSS. Variables are
random, not initialised (speed does not depend on the values, and it spares the compile of
every initialiser). The load average is printed because other processes on the machine change
the figures.

With --official_src, the official PyTorch DDColor is timed the same way (forward under
no_grad in eval mode; training step with L1 + AdamW), on the same inputs and threads. With
--interleaved as well, both run in one process, one step each in turn (marked `*`; the RSS is
then the pair's), so that both see the same load on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIGS = ("ddcolor_tiny:256:1", "ddcolor_tiny:256:4", "ddcolor_demo:64:16")


def _random_variables(shapes, seed: int = 0):
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['var']"):
            return np.ones(leaf.shape, leaf.dtype)
        values = rng.standard_normal(leaf.shape).astype(leaf.dtype)
        if name.endswith(("['u']", "['v']")):
            return values / np.linalg.norm(values)
        return 0.02 * values

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _flax_setup(name: str, size: int, batch: int, mode: str):
    """Compiles the step; returns (step() -> None, facts about the compiled program)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from aiaic_jax.models.backbones import get_backbone

    model = get_backbone(name)
    rng = np.random.default_rng(0)
    gray_l = jnp.asarray(rng.uniform(0, 100, (batch, size, size, 1)), jnp.float32)
    target_ab = jnp.asarray(rng.uniform(-60, 60, (batch, size, size, 2)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), gray_l)
    variables = jax.tree_util.tree_map(jnp.asarray, _random_variables(shapes))

    if mode == "forward":
        step = jax.jit(lambda v, x: model.apply(v, x)[0])
        args = [variables, gray_l]
    else:
        # The official DDColor optimiser: AdamW lr 1e-4, weight decay 0.01, betas (0.9, 0.99).
        optimizer = optax.adamw(1e-4, b1=0.9, b2=0.99, weight_decay=0.01)

        def train_step(state, gray_l, target_ab):
            params, batch_stats, opt_state = state

            def loss_fn(params):
                (ab, _), updates = model.apply(
                    {"params": params, "batch_stats": batch_stats},
                    gray_l,
                    train=True,
                    target_ab=target_ab,  # DisColor's training anchors; the others ignore it
                    mutable=["batch_stats"],
                    rngs={"dropout": jax.random.key(0), "anchors": jax.random.key(1)},
                )
                return jnp.mean(jnp.abs(ab - target_ab)), updates["batch_stats"]

            (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

        step = jax.jit(train_step, donate_argnums=0)
        state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
        args = [state, gray_l, target_ab]

    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    xla_bytes = None
    if memory is not None:
        xla_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )

    def run() -> None:
        out = compiled(*args)
        jax.block_until_ready(out)
        if mode == "train":
            args[0] = out[0]  # the state was donated

    facts = {
        "compile_s": compile_s,
        "gflop_per_image": float(cost.get("flops", float("nan"))) / batch / 1e9,
        "xla_bytes": xla_bytes,
    }
    return run, facts


def _torch_setup(src: str, size: int, batch: int, mode: str):
    """The official PyTorch DDColor-T step (basicsr's registry stubbed)."""
    import torch

    from bench.parity_ddcolor import import_official

    DDColor = import_official(Path(src))
    model = DDColor(
        encoder_name="convnext-t",
        decoder_name="MultiScaleColorDecoder",
        input_size=(size, size),
        num_output_channels=2,
        last_norm="Spectral",
        do_normalize=False,
        num_queries=100,
        num_scales=3,
        dec_layers=9,
    )
    image = torch.rand(batch, 3, size, size)
    target = torch.rand(batch, 2, size, size)
    if mode == "forward":
        model.eval()

        def run() -> None:
            with torch.no_grad():
                model(image)

    else:
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), 1e-4, betas=(0.9, 0.99), weight_decay=0.01
        )

        def run() -> None:
            optimizer.zero_grad()
            torch.nn.functional.l1_loss(model(image), target).backward()
            optimizer.step()

    return run, {"compile_s": 0.0, "threads": torch.get_num_threads()}


def _timings(times: list[float]) -> dict:
    return {"step_s": statistics.median(times), "best_s": min(times)}


def _child(spec: dict) -> None:
    """Times one configuration; with "interleaved", both frameworks, one step each in turn."""
    size, batch, mode = spec["size"], spec["batch"], spec["mode"]
    runs = {}
    if spec["framework"] in ("flax", "interleaved"):
        runs["flax"] = _flax_setup(spec["name"], size, batch, mode)
    if spec["framework"] in ("torch", "interleaved"):
        runs["torch"] = _torch_setup(spec["src"], size, batch, mode)
    times = {framework: [] for framework in runs}
    for step in range(spec["steps"] + 1):  # the first round warms up
        for framework, (run, _) in runs.items():
            start = time.perf_counter()
            run()
            if step:
                times[framework].append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for framework, (_, facts) in runs.items():
        result = {**spec, **facts, **_timings(times[framework]), "max_rss_bytes": rss}
        result["framework"] = framework + ("*" if spec["framework"] == "interleaved" else "")
        print("RESULT " + json.dumps(result))


def _run(spec: dict) -> list[dict]:
    load_before = os.getloadavg()[0]
    process = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"{spec} failed:\n{process.stderr[-3000:]}")
    results = [json.loads(line[len("RESULT ") :]) for line in lines]
    for result in results:
        result["load"] = (load_before, os.getloadavg()[0])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_CONFIGS), help="NAME:SIZE:BATCH")
    parser.add_argument("--modes", nargs="*", default=["forward", "train"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument(
        "--official_src", default=None, help="time the official PyTorch DDColor-T too"
    )
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="with --official_src: time both in one process, one step each in turn",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return

    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs")
    print(
        f"{'framework':10s} {'model':14s} {'size':>4s} {'bs':>3s} {'mode':8s} {'compile s':>9s} "
        f"{'step s':>8s} {'img/s':>7s} {'best':>7s} {'GFLOP/img':>9s} {'XLA MiB':>8s} "
        f"{'RSS MiB':>8s} load"
    )
    specs = []
    for config in args.only:
        name, size, batch = config.split(":")
        for mode in args.modes:
            base = {"name": name, "size": int(size), "batch": int(batch), "mode": mode}
            base |= {"steps": args.steps, "src": args.official_src}
            official = args.official_src and name == "ddcolor_tiny"
            if official and args.interleaved:
                specs.append({"framework": "interleaved", **base})
                continue
            specs.append({"framework": "flax", **base})
            if official:
                specs.append({"framework": "torch", **base})
    for spec in specs:
        for r in _run(spec):
            xla = f"{r['xla_bytes'] / 2**20:8.0f}" if r.get("xla_bytes") else f"{'-':>8s}"
            flops = f"{r['gflop_per_image']:9.1f}" if "gflop_per_image" in r else f"{'-':>9s}"
            print(
                f"{r['framework']:10s} {r['name']:14s} {r['size']:4d} {r['batch']:3d} "
                f"{r['mode']:8s} {r['compile_s']:9.1f} {r['step_s']:8.3f} "
                f"{r['batch'] / r['step_s']:7.2f} {r['batch'] / r['best_s']:7.2f} {flops} "
                f"{xla} {r['max_rss_bytes'] / 2**20:8.0f} {r['load'][0]:.1f}->{r['load'][1]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
