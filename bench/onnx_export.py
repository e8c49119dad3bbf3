"""The ONNX export against the jitted JAX program: images/s on this machine's CPU.

    PYTHONPATH=. python bench/onnx_export.py                                  # the demo model
    PYTHONPATH=. python bench/onnx_export.py --config ddcolor_tiny --batch 4  # DDColor-T at 256
    PYTHONPATH=. python bench/onnx_export.py --run runs/demo/full

Exports a run (default: a model of configs/, `--config`, with random variables drawn at the
scale of trained ones, `tests/tiny_model.random_variables`: a freshly initialised DDColor-T's
ab reach 1e29, where no comparison of two programs means anything) with `aiaic export --onnx`
into a scratch folder, then times the colorizer (grey L and the sound's spectrogram ->
ab and r, RNet included; `aiaic_jax/export.py`) on the same random batch: onnxruntime's CPU
provider on colorizer.onnx (intra-op threads: the CPU count, as the jitted program's), and the
jitted JAX function the export was made from (the CPU rewrites, as `aiaic colorize` runs it).
Prints the export's time, the largest differences of the two outputs, the median step of each
over `--steps` calls after one warm-up, and the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aiaic_jax import cli, export, exported, runs
from aiaic_jax.convert.common import save_variables
from aiaic_jax.inference import Colorizer
from aiaic_jax.models.aiaic import build_model
from tests import tiny_model


def random_run(directory: str, config_name: str) -> str:
    """A run directory (stage3) of a model of configs/ with `tiny_model.random_variables`."""
    config = importlib.import_module(f"configs.{config_name}").get_config()
    variables = tiny_model.random_variables(build_model(config.model), config.data.image_size)
    stage = os.path.join(directory, "stage3")
    save_variables(os.path.join(stage, "final"), variables)
    with open(os.path.join(stage, "config.json"), "w") as f:
        f.write(runs.config_document(config, {"name": "stage3"}))
    return directory


def median_seconds(step, steps: int) -> float:
    step()  # warm-up (and the JAX compile)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run (default: random weights, --config)")
    parser.add_argument("--config", default="demo", help="a module of configs/ (default demo)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    import onnxruntime

    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or random_run(os.path.join(scratch, "run"), args.config)
        out = os.path.join(scratch, "export")
        start = time.perf_counter()
        if cli.main(["export", "--checkpoint", run, out, "--onnx"]) != 0:
            sys.exit("export failed")
        export_seconds = time.perf_counter() - start
        manifest = json.load(open(os.path.join(out, exported.MANIFEST)))
        colorizer = Colorizer.from_run(run)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = os.cpu_count() or 1
        session = onnxruntime.InferenceSession(
            os.path.join(out, exported.ONNX_FILE), options, providers=["CPUExecutionProvider"]
        )
        size = colorizer.image_size
        bins, frames = manifest["inputs"]["spectrogram"][1:3]
        rng = np.random.default_rng(0)
        feeds = {
            "gray_l": rng.uniform(0, 100, (args.batch, size, size, 1)).astype(np.float32),
            "spectrogram": rng.normal(size=(args.batch, bins, frames)).astype(np.float32),
            "has_audio": np.ones(args.batch, bool),
        }
        program = jax.jit(export.colorizer_function(colorizer))

        def jax_step():
            return jax.block_until_ready(program(*feeds.values()))

        def onnx_step():
            return session.run(list(export.ONNX_OUTPUTS), feeds)

        differences = [
            float(np.max(np.abs(np.asarray(a) - b))) for a, b in zip(jax_step(), onnx_step())
        ]
        jax_seconds = median_seconds(jax_step, args.steps)
        onnx_seconds = median_seconds(onnx_step, args.steps)

    name = args.run or f"{args.config} (random weights)"
    per_second = args.batch / jax_seconds, args.batch / onnx_seconds
    print(f"jax {jax.__version__}, onnxruntime {onnxruntime.__version__}, {os.cpu_count()} CPUs")
    print(f"model: {name}, {size}x{size}, batch {args.batch}; export {export_seconds:.1f} s")
    print(f"largest difference: ab {differences[0]:.2e}, r {differences[1]:.2e}")
    print(f"jitted JAX   {jax_seconds * 1e3:9.1f} ms/batch {per_second[0]:9.1f} images/s")
    print(f"onnxruntime  {onnx_seconds * 1e3:9.1f} ms/batch {per_second[1]:9.1f} images/s")
    print(f"onnxruntime / jax: {jax_seconds / onnx_seconds:.2f}x")


if __name__ == "__main__":
    main()
