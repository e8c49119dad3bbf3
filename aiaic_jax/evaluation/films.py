"""The films split of the synthetic world: colorized films scored for colour and steadiness.

    python eval.py --workdir W --runs full=...,wo_r=...,e2e=... --films 8

`evaluate` renders the world's first `films` films (`synthetic.render_film`: three shots of a
`val` clip each, a pan or a zoom, with the clip's sound, cut straight to the next), writes each
as an H.264 file with its sound (`films/film_NNN.mp4` in the evaluation's directory), and
colorizes it through `aiaic_jax.film` (the path of `aiaic colorize`: streamed, sound windows,
shots) with every variant that has a checkpoint, once as it is and once with the colour
steadied (`steady_seconds`). Each output is decoded and scored against the rendered ground
truth: PSNR per frame (RGB, uint8, as the image metrics), averaged over frames and films, and
the colour distribution consistency (CDC, `temporal`: lower is steadier), averaged over films,
within shots (pairs of frames across the film's known cuts left out, as the literature measures
clips of one shot) and over the whole film; the ground-truth films' own CDC is the level that
motion (and, over the whole film, the cuts) alone give.

    variant        variables              r
    baseline       full/baseline/final    0 (the backbone alone)
    full           full/stage3/final      RNet's
    wo_r           wo_r/stage3/final      1
    wo_multistep   e2e/e2e/final          1
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np

from aiaic_jax import film as film_lib
from aiaic_jax.data import media, pipeline
from aiaic_jax.data.builders import synthetic
from aiaic_jax.evaluation import temporal
from aiaic_jax.inference import Colorizer

# variant -> (run, stage, r mode of the Colorizer)
FILM_VARIANTS = {
    "baseline": ("full", "baseline", "0"),
    "full": ("full", "stage3", "auto"),
    "wo_r": ("wo_r", "stage3", "1"),
    "wo_multistep": ("e2e", "e2e", "1"),
}
STEADY_SECONDS = 2.0


def world(config: ml_collections.ConfigDict) -> synthetic.SyntheticConfig:
    """The synthetic world the runs' dataset was built with (its stored options)."""
    if config.data.name != "synthetic":
        raise ValueError(
            f"films are rendered by the synthetic world; the data is {config.data.name}"
        )
    options = synthetic.read_world(pipeline.dataset_dir(config.data))["options"]
    return synthetic.SyntheticConfig(name=config.data.config_name, **options)


def psnr(output: np.ndarray, truth: np.ndarray) -> float:
    """PSNR in dB of two uint8 frames (peak 255; an MSE floored as `metrics.psnr` does)."""
    difference = output.astype(np.float64) - truth.astype(np.float64)
    mse = max(float(np.mean(difference**2)), 1.0 / difference.size)
    return 10.0 * np.log10(255.0**2 / mse)


def write_films(world_config: synthetic.SyntheticConfig, directory: str, count: int) -> list:
    """Renders films 0..count-1 and writes each with its sound; returns (path, Film) pairs."""
    os.makedirs(directory, exist_ok=True)
    films = []
    for index in range(count):
        rendered = synthetic.render_film(world_config, index)
        path = os.path.join(directory, f"film_{index:03d}.mp4")
        if not os.path.exists(path):
            with media.written_whole(path) as temporary:
                media.write_video(temporary, rendered.frames, rendered.audio, rendered.fps, crf=12)
        films.append((path, rendered))
    return films


def cuts(rendered: synthetic.Film) -> list[int]:
    """The frames of a rendered film that start a shot after its first."""
    return [shot["first_frame"] for shot in rendered.shots if shot["first_frame"] > 0]


def stability(frames: list[np.ndarray], rendered: synthetic.Film) -> dict[str, float]:
    """CDC of frames of `rendered`'s length: within its shots ("cdc_shots") and whole ("cdc")."""
    return {
        "cdc_shots": float(temporal.cdc(frames, cuts=cuts(rendered)).value),
        "cdc": float(temporal.cdc(frames).value),
    }


def score(output: str, rendered: synthetic.Film) -> dict[str, float]:
    """PSNR (mean over frames) and CDC (`stability`) of one colorized film against its ground
    truth."""
    frames = [rgb for rgb, _ in media.video_frames(output)]
    if len(frames) != len(rendered.frames):
        raise ValueError(f"{output}: {len(frames)} frames, the film has {len(rendered.frames)}")
    values = [psnr(a, b) for a, b in zip(frames, rendered.frames)]
    return {"psnr": float(np.mean(values)), **stability(frames, rendered)}


def evaluate(
    workdir: str,
    runs: Mapping[str, str],
    config: ml_collections.ConfigDict,
    *,
    films: int,
    variants: Sequence[str] | None = None,
    steady_seconds: float = STEADY_SECONDS,
) -> dict[str, Any]:
    """Scores every variant with a checkpoint on the first `films` films (module docstring),
    `config.data.eval_batch_size` frames per model call.

    Returns {"films", "frames", "steady_seconds", "reference_cdc_shots", "reference_cdc",
    "variants": {name: {"psnr", "cdc_shots", "cdc", "psnr_steady", "cdc_shots_steady",
    "cdc_steady", "cdc_change", "flicker_removed"}}}: the reference CDCs are those of the
    ground-truth films as written (motion, the encoder's noise and, over the whole film, the
    cuts); cdc_change is the relative change of the CDC within shots by steadying, and
    flicker_removed the share of a variant's CDC within shots above the reference's that
    steadying removes (None where there is none above it).
    """
    world_config = world(config)
    directory = os.path.join(workdir, "films")
    rendered = write_films(world_config, directory, films)
    # The films as written (the same encoder quality as the outputs).
    reference = [
        stability([rgb for rgb, _ in media.video_frames(path)], film) for path, film in rendered
    ]
    results: dict[str, Any] = {
        "films": films,
        "frames": sum(len(film.frames) for _, film in rendered),
        "steady_seconds": steady_seconds,
        "reference_cdc_shots": float(np.mean([r["cdc_shots"] for r in reference])),
        "reference_cdc": float(np.mean([r["cdc"] for r in reference])),
        "variants": {},
    }
    for name in variants or FILM_VARIANTS:
        run, stage, mode = FILM_VARIANTS[name]
        if run not in runs or not os.path.isdir(os.path.join(runs[run], stage, "final")):
            continue
        start = time.perf_counter()
        colorizer = Colorizer.from_run(
            runs[run], stage, config=config, mode=mode, batch_size=config.data.eval_batch_size
        )
        scores: dict[str, list[float]] = {}
        for path, film in rendered:
            for suffix, steady in (("", 0.0), ("_steady", steady_seconds)):
                output = os.path.join(directory, name + suffix, os.path.basename(path))
                if os.path.exists(output):
                    os.remove(output)
                film_lib.colorize_film(
                    colorizer, path, output, steady_seconds=steady, progress=False
                )
                for key, value in score(output, film).items():
                    scores.setdefault(key + suffix, []).append(value)
        row = {key: float(np.mean(v)) for key, v in scores.items()}
        removed = row["cdc_shots"] - row["cdc_shots_steady"]
        excess = row["cdc_shots"] - results["reference_cdc_shots"]
        row["cdc_change"] = -removed / row["cdc_shots"] if row["cdc_shots"] else None
        row["flicker_removed"] = removed / excess if excess > 0 else None
        results["variants"][name] = row
        print(f"[eval] films: {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return results


def markdown(results: Mapping[str, Any]) -> str:
    """The films table of results.md."""
    steady = results["steady_seconds"]
    lines = [
        f"## films ({results['films']} synthetic films, {results['frames']} frames)",
        "",
        "PSNR (dB, mean over frames) and CDC (lower is steadier) within shots (pairs across a "
        "cut left out) and over the whole film (cuts included), as colorized and with the "
        f"colour steadied (--steady {steady:g}). The ground-truth films' own CDC, from motion "
        f"alone: {results['reference_cdc_shots']:.4f} within shots, "
        f"{results['reference_cdc']:.4f} over the film. The last columns: the change of the "
        "CDC within shots by steadying, and the share of it above the ground truth's that "
        "steadying removes.",
        "",
        "| variant | PSNR | CDC shots | CDC film | PSNR steadied | CDC shots steadied | "
        "CDC film steadied | CDC shots change | flicker removed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def share(value: float | None, sign: str = "") -> str:
        return "—" if value is None else f"{value:{sign}.0%}"

    for name, row in results["variants"].items():
        lines.append(
            f"| {name} | {row['psnr']:.2f} | {row['cdc_shots']:.4f} | {row['cdc']:.4f} | "
            f"{row['psnr_steady']:.2f} | {row['cdc_shots_steady']:.4f} | "
            f"{row['cdc_steady']:.4f} | {share(row['cdc_change'], '+')} | "
            f"{share(row['flicker_removed'])} |"
        )
    return "\n".join(lines) + "\n"
