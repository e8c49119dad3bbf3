"""Throughput of `aiaic colorize` on a folder of photos with sound, against the bare model.

PYTHONPATH=. python bench/colorize.py                       # the demo model, random weights
PYTHONPATH=. python bench/colorize.py --run runs/demo/full  # a trained run

Writes a folder of `--pairs` JPEG photos (sizes of ordinary photos, landscape and portrait,
`--sizes` kinds, scaled by `--photo_scale`; with `--distinct` every photo a size of its own)
each with a WAV sound of its basename (2-10 s, 44.1 kHz stereo), then times:

- folder: `cli.colorize_folder` (decode every photo and sound, the model in batches, the
  full-resolution composition with each photo's own L, JPEG encoding), the first pass (with
  its compilations) and a second pass (warm);
- forward: the bare jitted model call with each image's own sound (`joint_forward`, the
  evaluation's `colorize_batch`) at the model's resolution and `--batch_size`, on batches
  already in memory, warm;

and prints images/s of each and their ratio. Model loading is not in either figure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import tempfile
import time

import jax
import numpy as np
import scipy.io.wavfile
from PIL import Image

from aiaic_jax import cli, runs
from aiaic_jax.convert.common import save_variables
from aiaic_jax.evaluation.variants import colorize_batch
from aiaic_jax.inference import Colorizer

PHOTO_SIZES = (
    (640, 480),
    (800, 600),
    (1024, 768),
    (1280, 720),
    (500, 375),
    (480, 640),
    (600, 800),
    (1200, 800),
    (720, 540),
    (960, 640),
)


def _photo(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = size
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))
    noise = rng.normal(0, 8, (height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def make_folder(
    folder: str,
    pairs: int,
    kinds: int,
    scale: float = 1.0,
    seed: int = 0,
    distinct: bool = False,
) -> None:
    """`pairs` photos of `kinds` sizes with a sound each; distinct: every photo a size of its
    own (the n-th photo 7n x 5n pixels larger than its kind)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for index in range(pairs):
        width, height = PHOTO_SIZES[index % kinds]
        if distinct:
            width, height = width + 7 * index, height + 5 * index
        size = (max(16, round(width * scale)), max(16, round(height * scale)))
        Image.fromarray(_photo(size, rng)).save(
            os.path.join(folder, f"p{index:04d}.jpg"), quality=90
        )
        seconds = rng.uniform(2, 10)
        t = np.arange(round(seconds * 44100)) / 44100
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 2000) * t) + rng.normal(0, 0.02, t.size)
        stereo = np.repeat((wave * 32767).astype(np.int16)[:, None], 2, axis=1)
        scipy.io.wavfile.write(os.path.join(folder, f"p{index:04d}.wav"), 44100, stereo)


def joint_forward(colorizer: Colorizer):
    """The model's jitted call on a batch (`rgb` uint8 at the model's size, int16 `audio`,
    `has_audio`): spectrogram, E_a, RNet and the backbone for every image, as in evaluation."""

    @jax.jit
    def forward(variables, batch, controls):
        ab, relevance, _ = colorize_batch(
            colorizer.model, colorizer.config, variables, batch, controls, "audio"
        )
        return ab, relevance

    return lambda batch: forward(colorizer.variables, batch, colorizer.controls)


def random_run(directory: str, config_name: str = "demo") -> str:
    """A run directory with freshly initialised variables (stage3) of a model in configs/
    (`config_name`: `demo`, or e.g. `ddcolor_tiny` for DDColor-T at 256)."""
    from aiaic_jax.models.aiaic import build_model
    from aiaic_jax.train import loop

    config = importlib.import_module(f"configs.{config_name}").get_config()
    variables = loop.init_model_variables(build_model(config.model), config)
    stage = os.path.join(directory, "stage3")
    save_variables(os.path.join(stage, "final"), variables)
    with open(os.path.join(stage, "config.json"), "w") as f:
        f.write(runs.config_document(config, {"name": "stage3"}))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run (default: the demo model, random weights)")
    parser.add_argument("--pairs", type=int, default=105)
    parser.add_argument("--sizes", type=int, default=len(PHOTO_SIZES), help="kinds of photo size")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument(
        "--photo_scale", type=float, default=1.0, help="scale of the photo sizes (1: 500-1280 px)"
    )
    parser.add_argument(
        "--distinct", action="store_true", help="every photo a size of its own (compile costs)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or random_run(os.path.join(scratch, "run"))
        folder = os.path.join(scratch, "photos")
        started = time.perf_counter()
        make_folder(folder, args.pairs, args.sizes, args.photo_scale, distinct=args.distinct)
        print(
            f"folder: {args.pairs} photos + sounds written in {time.perf_counter() - started:.1f} s"
        )

        colorizer = Colorizer.from_run(run, batch_size=args.batch_size)
        size = colorizer.image_size
        print(
            f"model: {colorizer.checkpoint.path} at {size}x{size}, mode {colorizer.mode}, "
            f"batch {args.batch_size}, {jax.devices()[0].platform} x{jax.device_count()}"
        )
        passes = {}
        for name in ("cold", "warm"):
            output = os.path.join(scratch, f"out_{name}")
            started = time.perf_counter()
            failures = cli.colorize_folder(colorizer, folder, output, None)
            passes[name] = time.perf_counter() - started
            assert not failures, failures

        rng = np.random.default_rng(1)
        batch = {
            "rgb": rng.integers(0, 256, (args.batch_size, size, size, 3), np.uint8),
            "audio": rng.integers(-8000, 8000, (args.batch_size, colorizer.num_samples)).astype(
                np.int16
            ),
            "has_audio": np.ones(args.batch_size, bool),
        }
        model_call = joint_forward(colorizer)
        forward = lambda: model_call(batch)
        jax.block_until_ready(forward())
        batches = -(-args.pairs // args.batch_size)
        started = time.perf_counter()
        for _ in range(batches):
            jax.block_until_ready(forward())
        bare = time.perf_counter() - started

    folder_rate = args.pairs / passes["warm"]
    bare_rate = batches * args.batch_size / bare
    print(
        f"aiaic colorize (folder), first pass: {args.pairs / passes['cold']:.1f} images/s "
        f"({passes['cold']:.1f} s)"
    )
    print(
        f"aiaic colorize (folder), warm:       {folder_rate:.1f} images/s ({passes['warm']:.1f} s)"
    )
    print(f"bare jitted forward:                 {bare_rate:.1f} images/s ({bare:.1f} s)")
    print(f"bare forward / folder (warm): {bare_rate / folder_rate:.2f}x")


if __name__ == "__main__":
    main()
