"""Train-step speed, compile time and memory per stage and batch size.

PYTHONPATH=. python bench/train.py                               # the default set below
PYTHONPATH=. python bench/train.py --runs demo:all ddcolor_tiny:stage1:1,4 --steps 3
PYTHONPATH=. python bench/train.py --runs demo@discolor_demo:baseline  # demo.get_config(arg)
PYTHONPATH=. python bench/train.py --runs demo:all --kernels native  # XLA's own convolutions

Each run is `config:stages[:batches]` (stages comma-separated or `all`; batches default to the
stage's own). Every (config, stage, batch) is measured in a fresh subprocess: build the
model, fill its variables with random values of the right shapes (speed does not depend on
them), compile the train step (timed), run one warm-up step and `--steps` timed steps on a
random batch at the config's resolution and clip length, then report steps/s, images/s, the
compiled program's memory (`compiled.memory_analysis()`: arguments, outputs, temporaries) and
the process's peak RSS. A table goes to stdout and JSON lines to `--out` if given. Each child
starts as train.py does, with `host_memory.retain()` (`--host_memory release`: the defaults).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = (
    "demo:all",
    "ddcolor_tiny:stage1:1,2,4",  # 4: 6.7 GB of temporaries; 8 would need about 13
    "ddcolor_tiny:baseline,stage3,e2e:4",
    "ddcolor_tiny:stage2:16",  # 10-s clips: 2.9 GB of temporaries at 16, about 12 GB at 64
    "ddcolor_tiny:rnet:16",
)


def measure(
    config_name: str,
    stage_name: str,
    batch_size: int,
    steps: int,
    fast_compile: bool = False,
    kernels: str = "",
    retain: bool = True,
) -> dict:
    """Runs in the child process: one configuration, returns its figures."""
    from aiaic_jax import host_memory

    # As train.py starts (docs/runs.md, "Host memory on the CPU"); the result says what applied.
    host_memory_outcome = host_memory.retain() if retain else "release"
    import jax
    import numpy as np

    from aiaic_jax.train import loop, parallel

    config = load_config(config_name)
    config.stages[stage_name].batch_size = batch_size
    if kernels:
        with config.model.backbone_overrides.unlocked():
            config.model.backbone_overrides.kernels = kernels
    stage, builder, mesh, state = random_train_state(config, stage_name)
    size = int(config.data.image_size)
    samples = round(float(config.data.audio_seconds) * 16000)
    rng = np.random.default_rng(0)
    batch = {
        "rgb": rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8),
        "audio": rng.integers(-8000, 8000, (batch_size, samples)).astype(np.int16),
        "has_audio": np.ones(batch_size, bool),
        "relevant": np.ones(batch_size, bool),
        "label": np.arange(batch_size, dtype=np.int32),
    }
    batch = parallel.to_global(batch, mesh)
    key = parallel.replicate(loop.stage_rng(config, stage.name), mesh)
    constants = parallel.replicate(builder.constants(), mesh)

    started = time.perf_counter()
    compiled = loop.compile_train_step(
        builder, mesh, state, batch, key, constants, fast=fast_compile
    )
    compile_seconds = time.perf_counter() - started
    memory = compiled.memory_analysis()

    state, metrics = compiled(state, batch, key, constants)  # warm-up
    jax.block_until_ready(metrics)
    started = time.perf_counter()
    for _ in range(steps):
        state, metrics = compiled(state, batch, key, constants)
    jax.block_until_ready(metrics)
    step_seconds = (time.perf_counter() - started) / steps
    return {
        "config": config_name,
        "stage": stage.name,
        "batch": batch_size,
        "image_size": size,
        "gan": builder.discriminator is not None,
        "fast_compile": fast_compile,
        "kernels": kernels or config.model.backbone_overrides.get("kernels", "auto"),
        "host_memory": host_memory_outcome,
        "compile_s": round(compile_seconds, 1),
        "step_s": round(step_seconds, 3),
        "steps_per_s": round(1.0 / step_seconds, 3),
        "images_per_s": round(batch_size / step_seconds, 2),
        "argument_mb": round(memory.argument_size_in_bytes / 2**20, 1) if memory else None,
        "output_mb": round(memory.output_size_in_bytes / 2**20, 1) if memory else None,
        "temp_mb": round(memory.temp_size_in_bytes / 2**20, 1) if memory else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "loss": float(metrics["loss"]),
    }


def random_train_state(config, stage_name: str):
    """(stage, its step, the mesh, a train state of random variables placed on the mesh) of a
    config's stage: speed and checkpoint size do not depend on the values."""
    import jax

    from aiaic_jax.models.aiaic import build_model
    from aiaic_jax.train import loop, parallel, stages
    from aiaic_jax.train.steps import make_step
    from tests.tiny_training import random_variables

    stage = stages.resolve(config, stage_name, train_size=1)
    model = build_model(config.model)
    template = loop.abstract_variables(model, config)
    builder = make_step(config, stage, model, template["params"])
    discriminator = None
    if builder.discriminator is not None:
        discriminator = random_variables(
            loop.abstract_discriminator_variables(builder, config), seed=1
        )
    mesh = parallel.make_mesh()
    state = jax.jit(builder.init_state, out_shardings=parallel.replicated(mesh))(
        random_variables(template), discriminator
    )
    return stage, builder, mesh, state


def load_config(config_name: str):
    """`configs/<name>.py`'s get_config(); `name@arg` calls get_config(arg), e.g.
    `demo@discolor_demo` (the demo with the DisColor backbone)."""
    import importlib

    module, _, argument = config_name.partition("@")
    get_config = importlib.import_module(f"configs.{module}").get_config
    return get_config(argument) if argument else get_config()


def _expand(run: str) -> list[tuple[str, str, int]]:

    from aiaic_jax.train import stages

    parts = run.split(":")
    config_name, stage_names = parts[0], parts[1]
    config = load_config(config_name)
    names = stages.STAGE_NAMES if stage_names == "all" else stage_names.split(",")
    out = []
    for name in names:
        name = stages.stage_name(name)
        if len(parts) > 2:
            batches = [int(b) for b in parts[2].split(",")]
        else:
            batches = [int(config.stages[name].batch_size) or int(config.data.batch_size)]
        out += [(config_name, name, b) for b in batches]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=list(DEFAULT_RUNS))
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--out", help="append JSON lines here")
    parser.add_argument(
        "--fast-compile",
        action="store_true",
        help="compile with XLA's backend optimisation off (config.train.fast_compile)",
    )
    parser.add_argument(
        "--kernels",
        choices=("auto", "rewrite", "native"),
        default="",
        help="the backbone's kernels (model.backbone_overrides.kernels); default: the config's",
    )
    parser.add_argument(
        "--host_memory",
        choices=("retain", "release"),
        default="retain",
        help="retain: host_memory.retain() first, as train.py does; release: the defaults",
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # config:stage:batch, in the child
    args = parser.parse_args()
    if args.one:
        config_name, stage_name, batch = args.one.split(":")
        print(
            json.dumps(
                measure(
                    config_name,
                    stage_name,
                    int(batch),
                    args.steps,
                    args.fast_compile,
                    args.kernels,
                    args.host_memory == "retain",
                )
            )
        )
        return

    columns = (
        "config",
        "stage",
        "batch",
        "gan",
        "fast_compile",
        "kernels",
        "compile_s",
        "step_s",
        "images_per_s",
    )
    columns += ("argument_mb", "temp_mb", "peak_rss_mb")
    print(" | ".join(columns), flush=True)
    for run in args.runs:
        for config_name, stage_name, batch in _expand(run):
            command = [
                sys.executable,
                __file__,
                f"--one={config_name}:{stage_name}:{batch}",
                f"--steps={args.steps}",
            ] + (["--fast-compile"] if args.fast_compile else [])
            command += [f"--kernels={args.kernels}"] if args.kernels else []
            command += [f"--host_memory={args.host_memory}"]
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                print(f"{config_name} | {stage_name} | {batch} | failed: {tail[0]}", flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(" | ".join(str(result[c]) for c in columns), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
