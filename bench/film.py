"""Films through `aiaic colorize`: peak memory by film length, and frames/s against the model.

    PYTHONPATH=. python bench/film.py                             # 1 and 10 min, the demo model
    PYTHONPATH=. python bench/film.py --minutes 1 --run runs/demo/full --size 640x360
    PYTHONPATH=. python bench/film.py --minutes 0.25 --config ddcolor_tiny --model_batches 8

Writes a film of each length (`--size`, `--fps`; a slow pan over a smooth picture with a cut
every 20 s, and a stereo 44.1 kHz soundtrack whose tone changes every second), streamed to the
encoder so that the bench itself stays small, then runs `aiaic colorize --checkpoint RUN film
out.mp4` on it in a fresh process and prints the child's wall time, frames/s and peak resident
memory (VmHWM, Linux; see bench/colorize_memory.py). Peak memory bounded independently of the
length means the same figure for every length.

Then, in this process, the model alone at the same resolution and batch on frames already in
memory: the joint jitted call (each frame's own sound through spectrogram, E_a and RNet, as
evaluation runs it) and the film path's per-frame calls (`inference._relevance` and
`_colorize_at`, with the sound's part computed once per window), and the ratio of `aiaic
colorize`'s frames/s to each.
Without --run the model is the demo's, or that of `--config` (a module of configs/), with random
weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import fractions
import os
import re
import sys
import tempfile
import time

import av
import jax
import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.colorize import joint_forward, random_run  # noqa: E402
from bench.colorize_memory import run_cli  # noqa: E402


def write_film(path: str, seconds: float, fps: int, size: tuple[int, int], seed: int = 0) -> int:
    """A film of `seconds`, streamed to x264 (ultrafast) frame by frame; returns its frames."""
    rng = np.random.default_rng(seed)
    width, height = size
    count = round(seconds * fps)
    rate = 44100
    with av.open(path, "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"}
        sound = container.add_stream("aac", rate=rate, layout="stereo")
        picture, written = None, 0
        for index in range(count):
            if index % (20 * fps) == 0:  # a cut: a new picture twice the frame's width
                coarse = rng.uniform(0, 255, (6, 12, 3)).astype(np.uint8)
                picture = np.asarray(
                    Image.fromarray(coarse).resize((2 * width, height), Image.Resampling.BICUBIC)
                )
            shift = (index % (20 * fps)) * width // (20 * fps)  # a slow pan
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(picture[:, shift : shift + width]), format="rgb24"
            )
            frame.pts = index
            container.mux(video.encode(frame))
            while written < (index + 1) * rate // fps:  # a second of tone at a time
                second = written // rate
                t = np.arange(written, (second + 1) * rate) / rate
                wave = 0.3 * np.sin(2 * np.pi * (220 + 110 * (second % 7)) * t)
                samples = np.repeat((wave * 32767).astype(np.int16)[None], 2, axis=0)
                audio = av.AudioFrame.from_ndarray(
                    samples.T.reshape(1, -1).copy(), format="s16", layout="stereo"
                )
                audio.sample_rate, audio.pts = rate, written
                audio.time_base = fractions.Fraction(1, rate)
                container.mux(sound.encode(audio))
                written += t.size
        container.mux(video.encode(None))
        container.mux(sound.encode(None))
    return count


def colorize_in_child(run: str, film: str, output: str, batch: int) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, summary line) of `aiaic colorize` in a fresh process."""
    argv = ["colorize", "--checkpoint", run, "--batch_size", str(batch), film, output]
    started = time.perf_counter()
    peak, stdout = run_cli(argv)
    wall = time.perf_counter() - started
    return wall, peak, [x for x in stdout.splitlines() if " -> " in x][-1]


def model_rates(run: str, batch: int, batches: int) -> dict[str, float]:
    """Frames/s of the model alone (warm), on frames already at the model's resolution."""
    from aiaic_jax import inference
    from aiaic_jax.inference import Colorizer

    colorizer = Colorizer.from_run(run, batch_size=batch)
    size = colorizer.image_size
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (batch, size, size, 3), np.uint8)
    audio = rng.integers(-8000, 8000, (batch, colorizer.num_samples)).astype(np.int16)
    joint = joint_forward(colorizer)
    joint_batch = {"rgb": rgb, "audio": audio, "has_audio": np.ones(batch, bool)}
    heard = colorizer.hear([audio[0]])[0]
    code = np.repeat(heard.code[None], batch, axis=0)
    embedding = np.repeat(heard.embedding[None], batch, axis=0)

    def per_frame():
        relevance = inference._relevance(
            colorizer.variables,
            rgb,
            embedding,
            np.ones(batch, bool),
            colorizer.controls,
            model=colorizer.model,
        )
        return inference._colorize_at(
            colorizer.variables, rgb, code, relevance, model=colorizer.model
        )

    rates = {}
    for name, call in (("joint", lambda: joint(joint_batch)), ("per_frame", per_frame)):
        jax.block_until_ready(call())
        started = time.perf_counter()
        for _ in range(batches):
            jax.block_until_ready(call())
        rates[name] = batches * batch / (time.perf_counter() - started)
    rates["image_size"] = size
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run (default: --config's model, random weights)")
    parser.add_argument(
        "--config", default="demo", help="without --run: the model of configs/<name>.py"
    )
    parser.add_argument("--minutes", default="1,10", help="film lengths, comma-separated")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--model_batches", type=int, default=40, help="batches timed per call")
    parser.add_argument("--keep", help="write the films and outputs here (default: a temp dir)")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    load = os.getloadavg()[0]

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or scratch
        os.makedirs(folder, exist_ok=True)
        run = args.run or random_run(os.path.join(scratch, "run"), args.config)
        rows = []
        for minutes in [float(m) for m in args.minutes.split(",")]:
            film = os.path.join(folder, f"film_{minutes:g}min.mp4")
            started = time.perf_counter()
            frames = write_film(film, minutes * 60, args.fps, size)
            print(f"{film}: {frames} frames written in {time.perf_counter() - started:.0f} s")
            output = os.path.join(folder, f"film_{minutes:g}min_colour.mp4")
            if os.path.exists(output):
                os.remove(output)
            wall, peak, summary = colorize_in_child(run, film, output, args.batch_size)
            print(summary)
            decoded = int(re.search(r"(\d+) frames", summary).group(1))
            rows.append((minutes, decoded, wall, decoded / wall, peak))
        rates = model_rates(run, args.batch_size, args.model_batches)

    print(
        f"\n{args.size} at {args.fps} fps, batch {args.batch_size}, model at "
        f"{rates['image_size']}x{rates['image_size']}, {jax.devices()[0].platform}, "
        f"load {load:.2f} at the start"
    )
    print("| film | frames | aiaic colorize (s) | frames/s | peak RSS (MB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for minutes, frames, wall, rate, peak in rows:
        print(f"| {minutes:g} min | {frames} | {wall:.0f} | {rate:.1f} | {peak:.0f} |")
    print(
        f"\nmodel alone: joint call (sound per frame) {rates['joint']:.1f} frames/s, "
        f"per-frame call (sound heard per window) {rates['per_frame']:.1f} frames/s"
    )
    best = max(rows, key=lambda row: row[1])
    print(
        f"aiaic colorize / joint call: {best[3] / rates['joint']:.2f}x; "
        f"/ per-frame call: {best[3] / rates['per_frame']:.2f}x (the {best[0]:g} min film, "
        "process start, model load and compiles included)"
    )


if __name__ == "__main__":
    main()
